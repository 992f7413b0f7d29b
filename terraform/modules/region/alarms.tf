# Alarms on what docs/operations.md says to watch, from the metrics the
# CloudWatch agent publishes (cloudwatch.tf: namespace
# var.observability.metrics_namespace, dimension MeridianRegion) and from
# the load balancers. Every alarm notifies the region's SNS topic.
#
# On FoundationDB, the core's commit stall and store failure gauges stay 0
# (the backend reports neither: crates/kv/src/backend.rs) and the fjall
# write time is not recorded: the FoundationDB alarms below (availability,
# commit latency probe) watch the store instead. The core alarms are kept:
# they are the ones that fire for a region run on fjall.

locals {
  namespace      = var.observability.metrics_namespace
  region_dims    = { MeridianRegion = var.name }
  alarm_actions  = [aws_sns_topic.alarms.arn]
  core_is_meant  = var.core.instances > 0
  gateways_meant = var.gateways.min_size > 0
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.prefix}-alarms"
  display_name      = "Meridian ${var.name} alarms"
  kms_master_key_id = aws_kms_key.platform.arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.observability.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.observability.alarm_email
}

# --- replication --------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "replication_lag" {
  alarm_name          = "${local.prefix}-replication-lag"
  alarm_description   = "A link into ${var.name} applies entries more than ${var.observability.replication_lag_threshold_ms} ms after they were appended at their source, for 5 minutes. See docs/operations.md, \"Replication: what to watch\"."
  namespace           = local.namespace
  metric_name         = "meridian_replication_lag_ms"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.observability.replication_lag_threshold_ms
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# The lag gauges freeze while a link is down: this is the alarm for that.
resource "aws_cloudwatch_metric_alarm" "replication_link_down" {
  count = length(local.peers) > 0 ? 1 : 0

  alarm_name          = "${local.prefix}-replication-link-down"
  alarm_description   = "A replication link into ${var.name} has been down for 5 minutes (meridian_replication_link_up = 0): usually the peer's core port is unreachable, or a certificate is refused."
  namespace           = local.namespace
  metric_name         = "meridian_replication_link_up"
  dimensions          = local.region_dims
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "outbox_depth" {
  alarm_name          = "${local.prefix}-outbox-depth"
  alarm_description   = "${var.name}'s outbox towards a peer holds more than ${var.observability.outbox_depth_threshold} entries for 10 minutes: its relay cannot keep up or cannot append to Kafka (meridian_relay_errors_total)."
  namespace           = local.namespace
  metric_name         = "meridian_outbox_depth"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 10
  datapoints_to_alarm = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.observability.outbox_depth_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# One per peer: a refused stamp from a peer holds that peer's whole link
# until the clocks agree. (source="client" is published too, not alarmed:
# one client's clock is not an operator's problem.)
resource "aws_cloudwatch_metric_alarm" "hlc_refused" {
  for_each = local.peers

  alarm_name          = "${local.prefix}-clock-stamps-refused-from-${each.key}"
  alarm_description   = "${var.name} refused replicated changes from ${each.key} whose clock stamp is more than max_offset_ms (${local.region.max_clock_offset_ms} ms) ahead: ${each.key}'s clock runs ahead; fix NTP there. The link from ${each.key} is held meanwhile."
  namespace           = local.namespace
  metric_name         = "meridian_hlc_refused_total"
  dimensions          = merge(local.region_dims, { source = each.key })
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- the core and its store -----------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "core_not_ready" {
  count = local.core_is_meant ? 1 : 0

  alarm_name          = "${local.prefix}-core-not-ready"
  alarm_description   = "${var.name}'s core is not ready (meridian_core_ready < 1) or not reporting, for 3 minutes: sends and deliveries of the region's users fail."
  namespace           = local.namespace
  metric_name         = "meridian_core_ready"
  dimensions          = local.region_dims
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "store_failed" {
  count = local.core_is_meant ? 1 : 0

  alarm_name          = "${local.prefix}-store-failed"
  alarm_description   = "${var.name}'s store failed for good (fail-stop): the core stopped and systemd restarts it, recovering from its journal. Repeated: see the core's log."
  namespace           = local.namespace
  metric_name         = "meridian_core_store_failed"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "commit_stalled" {
  count = local.core_is_meant ? 1 : 0

  alarm_name          = "${local.prefix}-commit-stalled"
  alarm_description   = "A commit of ${var.name}'s store has been writing for over 5 s (meridian_core_commit_stalled): a hung fsync or a full or failing disk; the core reports not ready meanwhile."
  namespace           = local.namespace
  metric_name         = "meridian_core_commit_stalled"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "commit_p99" {
  count = local.core_is_meant ? 1 : 0

  alarm_name          = "${local.prefix}-commit-p99"
  alarm_description   = "p99 of ${var.name}'s store commit write (meridian_kv_engine_write_seconds, fjall) above ${var.observability.commit_p99_threshold_seconds} s for 5 minutes: every send waits for it."
  namespace           = local.namespace
  metric_name         = "meridian_kv_engine_write_seconds"
  dimensions          = merge(local.region_dims, { quantile = "0.99" })
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.observability.commit_p99_threshold_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "fdb_unavailable" {
  alarm_name          = "${local.prefix}-foundationdb-unavailable"
  alarm_description   = "${var.name}'s FoundationDB database is unavailable, or no host reports its status, for 3 minutes (fdbcli status json, published by fdb-cloudwatch on the first host of each datacenter)."
  namespace           = local.namespace
  metric_name         = "FdbDatabaseAvailable"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "fdb_commit_latency" {
  alarm_name          = "${local.prefix}-foundationdb-commit-latency"
  alarm_description   = "FoundationDB's commit latency probe in ${var.name} above ${var.observability.fdb_commit_latency_threshold_seconds} s for 5 minutes: every send commits through it."
  namespace           = local.namespace
  metric_name         = "FdbCommitLatencySeconds"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.observability.fdb_commit_latency_threshold_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "fdb_standby_lag" {
  alarm_name          = "${local.prefix}-foundationdb-standby-lag"
  alarm_description   = "FoundationDB's standby datacenter in ${var.name} is more than 60 s behind for 10 minutes: a failover now would wait for it to catch up (FoundationDB docs: keep datacenter_version_difference small)."
  namespace           = local.namespace
  metric_name         = "FdbStandbyLagSeconds"
  dimensions          = local.region_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 10
  datapoints_to_alarm = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = 60
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- load balancers ---------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "gateway_unhealthy_hosts" {
  count = local.gateways_meant ? 1 : 0

  alarm_name          = "${local.prefix}-gateway-unhealthy-hosts"
  alarm_description   = "Gateways of ${var.name} fail their /readyz health check for 5 minutes (they cannot reach the region's core, or do not serve)."
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.gateway.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "gateway_no_healthy_hosts" {
  count = local.gateways_meant ? 1 : 0

  alarm_name          = "${local.prefix}-gateway-no-healthy-hosts"
  alarm_description   = "No gateway of ${var.name} is healthy: Route 53's health check takes the region out of gw.<domain>; clients move to other regions."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.gateway.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "core_no_healthy_host" {
  count = local.core_is_meant ? 1 : 0

  alarm_name          = "${local.prefix}-core-unhealthy"
  alarm_description   = "${var.name}'s core fails its /readyz health check behind the internal NLB for 3 minutes: gateways and peer links cannot reach it."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.core.arn_suffix, TargetGroup = aws_lb_target_group.core.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
