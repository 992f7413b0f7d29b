# The region's FoundationDB cluster, in FoundationDB's region configuration
# laid over the three AZs (FoundationDB's docs call failure-independent
# locations "datacenters" and name cloud AZs as such):
#
#   FoundationDB region 1 (active):  datacenter AZ[0], full replica;
#                                    satellites AZ[2], then AZ[1]
#   FoundationDB region 2 (standby): datacenter AZ[1], full replica;
#                                    satellites AZ[2], then AZ[0]
#
# Every commit is durable in the active datacenter's logs and in the first
# available satellite's logs before it is acknowledged; the standby
# applies it asynchronously (log routers). Losing AZ[0] fails over to AZ[1]
# with nothing lost (AZ[2]'s satellite logs hold the tail) and commits stay
# durable in two AZs; losing AZ[2] moves the satellite logs to the other
# full datacenter (a datacenter may be the other region's satellite:
# FoundationDB recruits them apart from its remote logs); losing AZ[1]
# leaves AZ[0] serving while the logs keep mutations for its return. Each
# datacenter replicates within itself (redundancy_mode). Satellite logs are
# recruited only with usable_regions = 2. This is one
# database per Meridian region: a region's inboxes, outbox and offsets are
# its own (docs/foundationdb.md, "One cluster per Meridian region"); the
# region configuration here is that database's high availability across
# AZs, not replication between Meridian regions, which Meridian does itself.
#
# Hosts are plain instances with fixed private addresses in the data
# subnets (the cluster file names the coordinators by address) and EBS data
# volumes that outlive them. The database is configured once, by an
# operator, with the JSON documents published below (docs/terraform.md).

locals {
  fdb = var.foundationdb

  fdb_package            = "${local.fdb.package_base_url}/${local.fdb.version}"
  fdb_client_package_url = "${local.fdb_package}/foundationdb-clients-${local.fdb.version}-1.el7.x86_64.rpm"
  fdb_server_package_url = "${local.fdb_package}/foundationdb-server-${local.fdb.version}-1.el7.x86_64.rpm"

  # Datacenter roles, each pinned to an AZ (by index into local.azs).
  fdb_datacenters = {
    primary   = { az_index = 0, hosts = local.fdb.hosts_per_datacenter, classes = local.fdb.process_classes, instance_type = local.fdb.instance_type }
    standby   = { az_index = 1, hosts = local.fdb.hosts_per_datacenter, classes = local.fdb.process_classes, instance_type = local.fdb.instance_type }
    satellite = { az_index = 2, hosts = local.fdb.satellite_hosts, classes = local.fdb.satellite_process_classes, instance_type = local.fdb.satellite_instance_type }
  }

  fdb_hosts = merge([
    for role, dc in local.fdb_datacenters : {
      for index in range(dc.hosts) : "${role}-${index}" => {
        role          = role
        index         = index
        az_index      = dc.az_index
        datacenter_id = local.azs[dc.az_index]
        classes       = dc.classes
        instance_type = dc.instance_type
        # Host numbers from 10: clear of the addresses AWS reserves.
        private_ip = cidrhost(local.data_subnet_cidrs[dc.az_index], 10 + index)
      }
    }
  ]...)

  # Coordinators: the first process of the first hosts of every datacenter,
  # the same number in each (3 + 3 + 3 by default), so that losing one AZ
  # and one more machine leaves a majority (FoundationDB's advice for
  # region configurations: spread over three datacenters).
  fdb_coordinators = sort([
    for key, host in local.fdb_hosts : "${host.private_ip}:${local.fdb.port_range_start}"
    if host.index < local.fdb.coordinators_per_datacenter
  ])

  # description:id@coordinators. The id only has to differ between
  # clusters; it is derived, not random, so that plans are stable.
  fdb_cluster_file = format(
    "%s:%s@%s",
    "meridian_${replace(var.name, "-", "_")}",
    substr(sha256("${var.name}/${local.region.vpc_cidr}"), 0, 16),
    join(",", local.fdb_coordinators),
  )

  # `fdbcli fileconfigure` documents (a JSON object in the shape of status
  # json's `configuration`). The standby datacenter starts with a negative
  # priority: a new database is first configured with one usable region,
  # then copied to the standby (usable_regions=2), then the standby is
  # allowed to take over (priority 0), as FoundationDB's docs require.
  # Each FoundationDB region: its full datacenter, then its satellites in
  # order of preference (by index into local.azs).
  fdb_region = {
    for role, dc in {
      active            = { azs = [0, 2, 1], priority = 1 }
      standby           = { azs = [1, 2, 0], priority = 0 }
      standby_bootstrap = { azs = [1, 2, 0], priority = -1 }
      } : role => {
      datacenters = [
        { id = local.azs[dc.azs[0]], priority = dc.priority },
        { id = local.azs[dc.azs[1]], priority = 1, satellite = 1, satellite_logs = local.fdb.satellite_logs },
        { id = local.azs[dc.azs[2]], priority = 0, satellite = 1, satellite_logs = local.fdb.satellite_logs },
      ]
      satellite_redundancy_mode = "one_satellite_double"
      satellite_logs            = local.fdb.satellite_logs
    }
  }

  fdb_configure = {
    bootstrap = {
      redundancy_mode = local.fdb.redundancy_mode
      storage_engine  = local.fdb.storage_engine
      logs            = local.fdb.logs
      usable_regions  = 1
      regions         = [local.fdb_region.active, local.fdb_region.standby_bootstrap]
    }
    final = {
      redundancy_mode = local.fdb.redundancy_mode
      storage_engine  = local.fdb.storage_engine
      logs            = local.fdb.logs
      usable_regions  = 2
      regions         = [local.fdb_region.active, local.fdb_region.standby]
    }
  }
}

# The cluster file every FoundationDB host and the core read at boot.
# Terraform writes the first one only: once the database runs, FoundationDB
# owns it (`coordinators` rewrites it on every process), and an operator
# who changes the coordinators writes the new file here (docs/terraform.md).
# A change of host count therefore never rewrites it behind FoundationDB.
resource "aws_ssm_parameter" "fdb_cluster" {
  name        = "/meridian/${var.name}/fdb.cluster"
  description = "FoundationDB cluster file of Meridian region ${var.name}"
  type        = "SecureString"
  key_id      = aws_kms_key.platform.arn
  value       = local.fdb_cluster_file

  tags = local.tags

  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_parameter" "fdb_configure" {
  for_each = local.fdb_configure

  name        = "/meridian/${var.name}/fdb.configure.${each.key}.json"
  description = "fdbcli fileconfigure document (${each.key}) of Meridian region ${var.name}: applied by hand, once"
  type        = "SecureString"
  key_id      = aws_kms_key.platform.arn
  value       = jsonencode(each.value)

  tags = local.tags
}

resource "aws_ebs_volume" "fdb_data" {
  for_each = local.fdb_hosts

  availability_zone = local.azs[each.value.az_index]
  size              = local.fdb.data_volume_size_gb
  type              = local.fdb.data_volume_type
  iops              = local.fdb.data_volume_iops
  throughput        = local.fdb.data_volume_type == "gp3" ? local.fdb.data_volume_throughput_mibps : null
  encrypted         = true
  kms_key_id        = aws_kms_key.data.arn

  tags = merge(local.tags, { Name = "${local.prefix}-fdb-${each.key}", MeridianRole = "foundationdb" })

  lifecycle {
    # A host's data: never destroyed by a plan that only meant to move it.
    prevent_destroy = true
  }
}

resource "aws_instance" "fdb" {
  for_each = local.fdb_hosts

  ami                    = local.ami_id
  instance_type          = each.value.instance_type
  subnet_id              = aws_subnet.data[each.value.az_index].id
  private_ip             = each.value.private_ip
  vpc_security_group_ids = [aws_security_group.fdb.id]
  iam_instance_profile   = aws_iam_instance_profile.fdb.name
  ebs_optimized          = true
  monitoring             = true
  # Replaced by hand, one at a time, after excluding it (docs/terraform.md).
  disable_api_termination = local.fdb.termination_protection

  user_data_base64 = base64gzip(templatefile("${path.module}/templates/fdb.sh.tftpl", {
    host_key               = each.key
    region_name            = var.name
    aws_region             = local.aws_region
    fdb_version            = local.fdb.version
    fdb_client_package_url = local.fdb_client_package_url
    fdb_server_package_url = local.fdb_server_package_url
    fdb_cluster_parameter  = aws_ssm_parameter.fdb_cluster.name
    data_device            = "/dev/sdf"
    metrics_namespace      = var.observability.metrics_namespace
    # One host per datacenter reports the cluster's status.
    publish_status = each.value.index == 0
    foundationdb_conf = templatefile("${path.module}/templates/foundationdb.conf.tftpl", {
      host_key        = each.key
      region_name     = var.name
      datacenter_id   = each.value.datacenter_id
      port_start      = local.fdb.port_range_start
      process_classes = each.value.classes
    })
  }))

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 20
    encrypted             = true
    kms_key_id            = aws_kms_key.data.arn
    delete_on_termination = true
    tags                  = merge(local.tags, { Name = "${local.prefix}-fdb-${each.key}-root", MeridianRole = "foundationdb" })
  }

  tags = merge(local.tags, { Name = "${local.prefix}-fdb-${each.key}", MeridianRole = "foundationdb" })

  lifecycle {
    # A new AMI or script must not replace a database host behind the
    # operator's back: hosts are rolled by hand, one at a time.
    ignore_changes = [ami, user_data_base64]
  }
}

resource "aws_volume_attachment" "fdb_data" {
  for_each = local.fdb_hosts

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.fdb_data[each.key].id
  instance_id = aws_instance.fdb[each.key].id
  # Stop the host before detaching: FoundationDB must not lose its disk
  # under a running process.
  stop_instance_before_detaching = true
}
