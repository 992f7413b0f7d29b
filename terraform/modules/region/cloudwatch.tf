# The CloudWatch agent on gateways and the core: it scrapes Meridian's
# Prometheus /metrics once a minute and publishes the series the alarms
# need (alarms.tf) as CloudWatch metrics, through embedded metric format
# log events; and it ships the processes' logs.
#
# Conversion (CloudWatch agent): gauges are published as read, counters as
# the delta since the previous scrape, summaries as their quantiles (the
# Prometheus exporter renders Meridian's histograms as summaries). Every
# published series gets the dimension MeridianRegion; a metric whose series
# differ in other labels (per source, per destination) then has several
# values per minute under that one dimension, which the alarms aggregate
# (Maximum, Sum). Each metric and dimension set is a billed custom metric:
# publish what is alarmed or graphed, not all of /metrics.

locals {
  prometheus_config = {
    core = yamlencode({
      global = { scrape_interval = "60s", scrape_timeout = "10s" }
      scrape_configs = [{
        job_name     = "meridian-core"
        metrics_path = "/metrics"
        static_configs = [{
          targets = ["127.0.0.1:${var.core.admin_port}"]
          labels  = { MeridianRegion = var.name }
        }]
      }]
    })
    gateway = yamlencode({
      global = { scrape_interval = "60s", scrape_timeout = "10s" }
      scrape_configs = [{
        job_name     = "meridian-gateway"
        metrics_path = "/metrics"
        # The gateway's admin listener (--admin-listen), plaintext; its
        # client port does not serve /metrics.
        static_configs = [{
          targets = ["127.0.0.1:${var.gateways.admin_port}"]
          labels  = { MeridianRegion = var.name }
        }]
      }]
    })
  }

  metric_declarations = {
    core = [
      {
        source_labels = ["job"]
        label_matcher = "^meridian-core$"
        dimensions    = [["MeridianRegion"]]
        metric_selectors = [
          "^meridian_core_ready$",
          "^meridian_core_store_failed$",
          "^meridian_core_commit_stalled$",
          "^meridian_core_commit_writing_seconds$",
          "^meridian_outbox_depth$",
          "^meridian_replication_lag_ms$",
          "^meridian_replication_lag_entries$",
          "^meridian_replication_link_up$",
          "^meridian_relay_errors_total$",
          "^meridian_replication_below_start_total$",
          "^meridian_replication_gaps_total$",
        ]
      },
      # Refused clock stamps per source: a peer region's clock running
      # ahead holds its whole link; source="client" is a client's clock.
      {
        source_labels    = ["job"]
        label_matcher    = "^meridian-core$"
        dimensions       = [["MeridianRegion", "source"]]
        metric_selectors = ["^meridian_hlc_refused_total$"]
      },
      # The store's commit time (each FoundationDB commit, or fjall's
      # write), p99 only.
      {
        source_labels    = ["job", "quantile"]
        label_matcher    = "^meridian-core;0\\.99$"
        dimensions       = [["MeridianRegion", "quantile"]]
        metric_selectors = ["^meridian_kv_engine_write_seconds$"]
      },
    ]
    gateway = [
      {
        source_labels = ["job"]
        label_matcher = "^meridian-gateway$"
        dimensions    = [["MeridianRegion"]]
        metric_selectors = [
          "^meridian_gateway_sessions$",
          "^meridian_gateway_ws_connections_total$",
          "^meridian_gateway_connections_refused_total$",
          "^meridian_gateway_rest_errors_total$",
        ]
      },
    ]
  }

  cloudwatch_agent_config = {
    for role in ["core", "gateway"] : role => jsonencode({
      agent = { metrics_collection_interval = 60 }
      logs = {
        force_flush_interval = 5
        logs_collected = {
          files = {
            collect_list = [{
              file_path       = "/var/log/meridian/${role}.log"
              log_group_name  = aws_cloudwatch_log_group.process[role].name
              log_stream_name = "{instance_id}"
            }]
          }
        }
        metrics_collected = {
          prometheus = {
            log_group_name         = aws_cloudwatch_log_group.prometheus.name
            prometheus_config_path = "/opt/aws/amazon-cloudwatch-agent/etc/prometheus.yaml"
            emf_processor = {
              metric_namespace         = var.observability.metrics_namespace
              metric_declaration_dedup = true
              metric_declaration       = local.metric_declarations[role]
            }
          }
        }
      }
    })
  }
}

resource "aws_cloudwatch_log_group" "process" {
  for_each = toset(["core", "gateway"])

  name              = "/meridian/${var.name}/${each.key}"
  retention_in_days = var.observability.log_retention_days
  kms_key_id        = aws_kms_key.platform.arn

  tags = local.tags
}

# The agent's embedded-metric-format events, from which CloudWatch Logs
# extracts the metrics.
resource "aws_cloudwatch_log_group" "prometheus" {
  name              = "/meridian/${var.name}/prometheus"
  retention_in_days = var.observability.log_retention_days
  kms_key_id        = aws_kms_key.platform.arn

  tags = local.tags
}
