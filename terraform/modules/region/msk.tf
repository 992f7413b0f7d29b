# The region's Kafka (MSK): the replication log when region files say
# `[log] kind = "kafka"`. Each region relays its changes for a destination
# into the topic meridian-replication.<this>.<destination> on its own
# brokers; the destination's link reads it through this region's core.
# Only this region's core speaks Kafka.
#
# Topics: Terraform's AWS provider cannot create Kafka topics, and need not:
# the core creates its topics when it starts (partitions from the region
# file's log_partitions, its log_replication_factor, retention.ms 7 days;
# docs/operations.md, "Kafka"). Broker-side auto-creation is off, so a
# misspelt topic fails loudly instead of appearing. The expected topics are
# an output (kafka_topics).
#
# Authentication: SASL/SCRAM. Meridian's Kafka client is librdkafka, which
# has no MSK IAM (AWS_MSK_IAM / OAUTHBEARER signing) support of its own; so
# access is by network (security.tf: only the core reaches 9096) and by the
# SCRAM secret, and `kafka-cluster:*` IAM actions would grant nothing.

locals {
  kafka_username = "meridian-${var.name}"
  kafka_topics   = [for peer in sort(keys(local.peers)) : "meridian-replication.${var.name}.${peer}"]
}

resource "aws_msk_configuration" "this" {
  name           = local.prefix
  description    = "Meridian ${var.name}: topics made by Meridian only, replicated 3 ways, acknowledged by 2"
  kafka_versions = [var.kafka.version]

  # min.insync.replicas=2 with replication factor 3 and the producer's
  # acks=all (librdkafka's default): an acknowledged relay append survives
  # one broker (one AZ).
  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    unclean.leader.election.enable=false
  PROPERTIES
}

resource "aws_cloudwatch_log_group" "msk" {
  name              = "/meridian/${var.name}/msk"
  retention_in_days = var.observability.log_retention_days
  kms_key_id        = aws_kms_key.platform.arn

  tags = local.tags
}

resource "aws_msk_cluster" "this" {
  cluster_name           = local.prefix
  kafka_version          = var.kafka.version
  number_of_broker_nodes = 3 * var.kafka.brokers_per_az
  enhanced_monitoring    = var.kafka.enhanced_monitoring

  broker_node_group_info {
    instance_type   = var.kafka.broker_instance_type
    client_subnets  = aws_subnet.private[*].id
    security_groups = [aws_security_group.msk.id]

    storage_info {
      ebs_storage_info {
        volume_size = var.kafka.volume_size_gb
      }
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      scram = true
      iam   = false
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.data.arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk.name
      }
    }
  }

  tags = local.tags
}

# The SCRAM credentials. MSK wants the secret named AmazonMSK_… and
# encrypted with a customer managed key. The password is generated here and
# written write-only: it is in neither the plan nor the state. Bump
# var.kafka.scram_password_version to rotate it, then refresh the core.
resource "aws_secretsmanager_secret" "kafka_scram" {
  name                    = "AmazonMSK_meridian_${var.name}"
  description             = "Kafka SASL/SCRAM credentials of Meridian ${var.name}'s core, JSON {username, password}"
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 30

  tags = local.tags
}

ephemeral "aws_secretsmanager_random_password" "kafka_scram" {
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "kafka_scram" {
  secret_id = aws_secretsmanager_secret.kafka_scram.id
  secret_string_wo = jsonencode({
    username = local.kafka_username
    password = ephemeral.aws_secretsmanager_random_password.kafka_scram.random_password
  })
  secret_string_wo_version = var.kafka.scram_password_version
}

data "aws_iam_policy_document" "kafka_scram_secret" {
  statement {
    sid       = "MskReadsTheScramSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.kafka_scram.arn]

    principals {
      type        = "Service"
      identifiers = ["kafka.amazonaws.com"]
    }
  }
}

resource "aws_secretsmanager_secret_policy" "kafka_scram" {
  secret_arn = aws_secretsmanager_secret.kafka_scram.arn
  policy     = data.aws_iam_policy_document.kafka_scram_secret.json
}

resource "aws_msk_scram_secret_association" "this" {
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = [aws_secretsmanager_secret.kafka_scram.arn]

  depends_on = [aws_secretsmanager_secret_version.kafka_scram]
}
