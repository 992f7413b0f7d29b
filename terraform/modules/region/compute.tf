# Gateways and the core: launch templates and auto-scaling groups.
#   gateways: stateless, any number, spread over the three AZs, scaled on
#             CPU, replaced by rolling instance refreshes that drain each
#             one (deregistration delay) before it stops;
#   core:     exactly one (var.core.instances is 0 or 1), in any of the
#             three AZs; the group replaces its instance when the instance
#             fails, always terminating the old one before launching the new
#             one, so two cores never share the region's FoundationDB cluster.

locals {
  # Every region's file, rendered for this host: only this region's file
  # names its own brokers (the others' are in their VPCs).
  region_files = {
    for name, region in var.regions : "${name}.toml" => templatefile("${path.module}/templates/region.toml.tftpl", {
      name             = name
      region           = region
      kafka_brokers    = name == var.name ? aws_msk_cluster.this.bootstrap_brokers_sasl_scram : ""
      kafka_username   = local.kafka_username
      tls_dir          = local.tls_dir
      fdb_cluster_path = local.fdb_cluster_path
      # The NLB's nodes live in the public subnets (network.tf's plan,
      # the same for every region).
      trusted_proxies = [for i in range(3) : cidrsubnet(region.vpc_cidr, 4, i)]
    })
  }

  common_flags = "--profile production --region ${var.name} --regions-dir ${local.regions_dir} --data-dir ${local.data_dir}"

  user_data = {
    for role in ["core", "gateway"] : role => templatefile("${path.module}/templates/meridian.sh.tftpl", {
      role                    = role
      region_name             = var.name
      aws_region              = local.aws_region
      release_url             = var.release.meridian_url
      fdb_client_package_url  = local.fdb_client_package_url
      region_files            = local.region_files
      regions_dir             = local.regions_dir
      data_dir                = local.data_dir
      tls_dir                 = local.tls_dir
      fdb_cluster_path        = local.fdb_cluster_path
      fdb_cluster_parameter   = aws_ssm_parameter.fdb_cluster.name
      identity_name           = "${role}.${var.name}"
      secret_ca               = aws_secretsmanager_secret.this["ca"].arn
      secret_identity         = aws_secretsmanager_secret.this[role].arn
      secret_edge             = aws_secretsmanager_secret.this["edge"].arn
      secret_kafka_scram      = aws_secretsmanager_secret.kafka_scram.arn
      prometheus_config       = local.prometheus_config[role]
      cloudwatch_agent_config = local.cloudwatch_agent_config[role]
      exec_start = role == "core" ? (
        "/usr/local/bin/meridian core ${local.common_flags} --admin-listen 0.0.0.0:${var.core.admin_port}"
        ) : (
        "/usr/local/bin/meridian gateway ${local.common_flags} --admin-listen 0.0.0.0:${var.gateways.admin_port}"
      )
    })
  }
}

resource "aws_launch_template" "gateway" {
  name_prefix   = "${local.prefix}-gateway-"
  description   = "Meridian ${var.name} gateway"
  image_id      = local.ami_id
  instance_type = var.gateways.instance_type
  ebs_optimized = true
  # User data is limited to 16 KiB and grows with every region's file:
  # gzipped (cloud-init unpacks it).
  user_data              = base64gzip(local.user_data["gateway"])
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.gateway.id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.gateway.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.gateways.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-gateway", MeridianRole = "gateway" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.prefix}-gateway", MeridianRole = "gateway" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "gateway" {
  name                = "${local.prefix}-gateway"
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.gateways.min_size
  max_size            = var.gateways.max_size
  desired_capacity    = var.gateways.desired_capacity
  target_group_arns   = [aws_lb_target_group.gateway.arn]
  # EC2 checks only: a dead or impaired instance is replaced, a crashed
  # process is restarted by systemd. /readyz (the target group) only routes:
  # an unready gateway, e.g. its core down, gets no clients and is alarmed.
  health_check_type         = "EC2"
  health_check_grace_period = 600
  default_instance_warmup   = 300
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTerminatingInstances"]

  launch_template {
    id      = aws_launch_template.gateway.id
    version = aws_launch_template.gateway.latest_version
  }

  # New gateways come up before old ones drain: clients always have
  # somewhere to reconnect.
  instance_maintenance_policy {
    min_healthy_percentage = 100
    max_healthy_percentage = 200
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 150
      instance_warmup        = 300
      auto_rollback          = true

      # The group's own health checks are EC2's: a release whose gateways
      # never turn ready would roll through. The balancer's unhealthy-host
      # alarm fails the refresh instead, and auto_rollback restores the
      # previous launch template.
      dynamic "alarm_specification" {
        for_each = local.refresh_alarms.gateway == [] ? [] : [1]

        content {
          alarms = local.refresh_alarms.gateway
        }
      }
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.prefix}-gateway", MeridianRole = "gateway" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The scaling policy moves it; an apply must not undo that.
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_policy" "gateway_cpu" {
  name                   = "${local.prefix}-gateway-cpu"
  autoscaling_group_name = aws_autoscaling_group.gateway.name
  policy_type            = "TargetTrackingScaling"
  # Scaling in drains the gateways it stops (deregistration delay), then
  # their clients reconnect to the others: safe, but each costs reconnects.
  estimated_instance_warmup = 300

  target_tracking_configuration {
    target_value = var.gateways.cpu_target_percent

    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}

resource "aws_launch_template" "core" {
  name_prefix            = "${local.prefix}-core-"
  description            = "Meridian ${var.name} core"
  image_id               = local.ami_id
  instance_type          = var.core.instance_type
  ebs_optimized          = true
  user_data              = base64gzip(local.user_data["core"])
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.core.id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.core.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  # On FoundationDB the core keeps nothing on disk (its state is in the
  # cluster): the root volume is all it needs.
  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.core.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-core", MeridianRole = "core" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.prefix}-core", MeridianRole = "core" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "core" {
  name                = "${local.prefix}-core"
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.core.instances
  max_size            = var.core.instances
  desired_capacity    = var.core.instances
  target_group_arns   = [aws_lb_target_group.core.arn]
  # EC2 checks only: a dead or impaired instance is replaced, a crashed
  # process is restarted by systemd. /readyz (the target group) only routes;
  # a core not ready, e.g. FoundationDB down, is alarmed, not replaced.
  health_check_type         = "EC2"
  health_check_grace_period = 900

  # Never two cores: replacements and refreshes terminate first, and AZ
  # rebalancing (which launches before terminating) is off.
  suspended_processes = ["AZRebalance"]

  instance_maintenance_policy {
    min_healthy_percentage = 0
    max_healthy_percentage = 100
  }

  launch_template {
    id      = aws_launch_template.core.id
    version = aws_launch_template.core.latest_version
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 0
      max_healthy_percentage = 100
      instance_warmup        = 300
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.prefix}-core", MeridianRole = "core" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

locals {
  # The alarms that stop an instance refresh (alarms.tf), where the region
  # has them.
  refresh_alarms = {
    gateway = [for name, alarm in aws_cloudwatch_metric_alarm.meridian : alarm.alarm_name if name == "gateway-unhealthy-hosts"]
  }
}
