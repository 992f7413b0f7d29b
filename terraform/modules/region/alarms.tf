# Alarms on what docs/operations.md says to watch, from the metrics the
# CloudWatch agent publishes (cloudwatch.tf: namespace
# var.observability.metrics_namespace, dimension MeridianRegion) and from
# the load balancers. Every alarm notifies the region's SNS topic.
#
# The store is watched from both sides. The core reports its own store's
# health, on FoundationDB as on fjall: meridian_kv_engine_write_seconds
# records each commit's duration (commit-p99), and once commits have been
# failing or unfinished without a success for more than 5 s (on
# FoundationDB: the cluster unreachable or unavailable) the core reports a
# stall (commit-stalled) and is not ready (core-not-ready, and its NLB
# health check), until a commit succeeds again. meridian_core_store_failed
# (store-failed) is fjall's only: FoundationDB recovers from failed disks
# itself, and a core never fail-stops because of its cluster. The
# foundationdb-* alarms watch the cluster itself (availability, its commit
# latency probe, the standby's lag), from its hosts' status metrics.

locals {
  namespace      = var.observability.metrics_namespace
  region_dims    = { MeridianRegion = var.name }
  alarm_actions  = [aws_sns_topic.alarms.arn]
  core_is_meant  = var.core.instances > 0
  gateways_meant = var.gateways.min_size > 0

  gateway_lb_dims = { LoadBalancer = aws_lb.gateway.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  core_lb_dims    = { LoadBalancer = aws_lb.core.arn_suffix, TargetGroup = aws_lb_target_group.core.arn_suffix }
  obs             = var.observability

  # Every alarm, by the suffix of its name: what it watches, for how many
  # one-minute periods in a row, and whether this region has what it
  # watches. `above`: alarm when the statistic exceeds the threshold;
  # otherwise when it falls below. `missing`: what a silent metric counts
  # as (a core that stops reporting is itself the problem).
  alarms = merge(
    {
      # --- replication
      "replication-lag" = {
        when        = true, namespace = local.namespace, metric = "meridian_replication_lag_ms", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 5, above = true, threshold = local.obs.replication_lag_threshold_ms, missing = "notBreaching"
        description = "A link into ${var.name} applies entries more than ${local.obs.replication_lag_threshold_ms} ms after they were appended at their source, for 5 minutes. See docs/operations.md, \"Replication: what to watch\"."
      }
      # The lag gauges freeze while a link is down: this is the alarm for that.
      "replication-link-down" = {
        when        = length(local.peers) > 0, namespace = local.namespace, metric = "meridian_replication_link_up", dimensions = local.region_dims
        statistic   = "Minimum", minutes = 5, above = false, threshold = 1, missing = "notBreaching"
        description = "A replication link into ${var.name} has been down for 5 minutes (meridian_replication_link_up = 0): usually the peer's core port is unreachable, or a certificate is refused."
      }
      "outbox-depth" = {
        when        = true, namespace = local.namespace, metric = "meridian_outbox_depth", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 10, above = true, threshold = local.obs.outbox_depth_threshold, missing = "notBreaching"
        description = "${var.name}'s outbox towards a peer holds more than ${local.obs.outbox_depth_threshold} entries for 10 minutes: its relay cannot keep up or cannot append to Kafka (meridian_relay_errors_total)."
      }
      # --- the core and its store
      "core-not-ready" = {
        when        = local.core_is_meant, namespace = local.namespace, metric = "meridian_core_ready", dimensions = local.region_dims
        statistic   = "Minimum", minutes = 3, above = false, threshold = 1, missing = "breaching"
        description = "${var.name}'s core is not ready (meridian_core_ready < 1) or not reporting, for 3 minutes: sends and deliveries of the region's users fail. A live core is not replaced: if its store is healthy (no commit-stalled, no foundationdb-* alarm), restart meridian-core."
      }
      "store-failed" = {
        when        = local.core_is_meant, namespace = local.namespace, metric = "meridian_core_store_failed", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 1, above = true, threshold = 0, missing = "notBreaching"
        description = "${var.name}'s store failed for good (fail-stop): the core stopped and systemd restarts it, recovering from its journal. Repeated: see the core's log."
      }
      "commit-stalled" = {
        when        = local.core_is_meant, namespace = local.namespace, metric = "meridian_core_commit_stalled", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 2, above = true, threshold = 0, missing = "notBreaching"
        description = "${var.name}'s store has taken no commit for over 5 s while commits fail or hang (meridian_core_commit_stalled): on FoundationDB, the cluster unreachable or unavailable; on fjall, a hung fsync or a full or failing disk. The core reports not ready meanwhile."
      }
      "commit-p99" = {
        when        = local.core_is_meant, namespace = local.namespace, metric = "meridian_kv_engine_write_seconds", dimensions = merge(local.region_dims, { quantile = "0.99" })
        statistic   = "Maximum", minutes = 5, above = true, threshold = local.obs.commit_p99_threshold_seconds, missing = "notBreaching"
        description = "p99 of ${var.name}'s store commits (meridian_kv_engine_write_seconds: a FoundationDB commit, or fjall's write) above ${local.obs.commit_p99_threshold_seconds} s for 5 minutes: every send waits for it."
      }
      "foundationdb-unavailable" = {
        when        = true, namespace = local.namespace, metric = "FdbDatabaseAvailable", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 3, above = false, threshold = 1, missing = "breaching"
        description = "${var.name}'s FoundationDB database is unavailable, or no host reports its status, for 3 minutes (fdbcli status json, published by fdb-cloudwatch on the first host of each datacenter)."
      }
      "foundationdb-commit-latency" = {
        when        = true, namespace = local.namespace, metric = "FdbCommitLatencySeconds", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 5, above = true, threshold = local.obs.fdb_commit_latency_threshold_seconds, missing = "notBreaching"
        description = "FoundationDB's commit latency probe in ${var.name} above ${local.obs.fdb_commit_latency_threshold_seconds} s for 5 minutes: every send commits through it."
      }
      "foundationdb-standby-lag" = {
        when        = true, namespace = local.namespace, metric = "FdbStandbyLagSeconds", dimensions = local.region_dims
        statistic   = "Maximum", minutes = 10, above = true, threshold = 60, missing = "notBreaching"
        description = "FoundationDB's standby datacenter in ${var.name} is more than 60 s behind for 10 minutes: a failover now would wait for it to catch up (FoundationDB docs: keep datacenter_version_difference small)."
      }
      # --- load balancers
      "gateway-unhealthy-hosts" = {
        when        = local.gateways_meant, namespace = "AWS/NetworkELB", metric = "UnHealthyHostCount", dimensions = local.gateway_lb_dims
        statistic   = "Maximum", minutes = 5, above = true, threshold = 0, missing = "notBreaching"
        description = "Gateways of ${var.name} fail their /readyz health check for 5 minutes (they cannot reach the region's core, or do not serve). They get no clients but are not replaced: if the core is up, restart meridian-gateway on them."
      }
      "gateway-no-healthy-hosts" = {
        when        = local.gateways_meant, namespace = "AWS/NetworkELB", metric = "HealthyHostCount", dimensions = local.gateway_lb_dims
        statistic   = "Minimum", minutes = 2, above = false, threshold = 1, missing = "breaching"
        description = "No gateway of ${var.name} is healthy: Route 53's health check takes the region out of gw.<domain>; clients move to other regions."
      }
      "core-unhealthy" = {
        when        = local.core_is_meant, namespace = "AWS/NetworkELB", metric = "HealthyHostCount", dimensions = local.core_lb_dims
        statistic   = "Minimum", minutes = 3, above = false, threshold = 1, missing = "breaching"
        description = "${var.name}'s core fails its /readyz health check behind the internal NLB for 3 minutes: gateways and peer links cannot reach it. A live core is not replaced (see core-not-ready)."
      }
    },
    # One per peer: a refused stamp from a peer holds that peer's whole link
    # until the clocks agree. (source="client" is published too, not
    # alarmed: one client's clock is not an operator's problem.)
    {
      for peer in local.peers : "clock-stamps-refused-from-${peer}" => {
        when        = true, namespace = local.namespace, metric = "meridian_hlc_refused_total", dimensions = merge(local.region_dims, { source = peer })
        statistic   = "Sum", minutes = 1, above = true, threshold = 0, missing = "notBreaching"
        description = "${var.name} refused replicated changes from ${peer} whose clock stamp is more than max_offset_ms (${local.region.max_clock_offset_ms} ms) ahead: ${peer}'s clock runs ahead; fix NTP there. The link from ${peer} is held meanwhile."
      }
    },
  )
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

# Each alarm of local.alarms this region has, notifying the SNS topic on
# alarm and on recovery.
resource "aws_cloudwatch_metric_alarm" "meridian" {
  for_each = { for name, alarm in local.alarms : name => alarm if alarm.when }

  alarm_name          = "${local.prefix}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = 60
  evaluation_periods  = each.value.minutes
  datapoints_to_alarm = each.value.minutes
  comparison_operator = each.value.above ? "GreaterThanThreshold" : "LessThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
