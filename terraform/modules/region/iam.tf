# Least privilege per role:
#   gateway:      its own TLS identity and the edge certificate; the release
#                 artifact; its log groups. No bucket, no broker, no store.
#   core:         its own TLS identity, the SCRAM secret, the cluster file;
#                 the release artifact; its logs; and the media buckets
#                 (core_media below): read and write its own bucket, read
#                 the peer regions' buckets (the core presigns downloads of
#                 their media; S3 checks the signer's rights, KMS included,
#                 when the client fetches). The core signs S3 requests and
#                 presigned URLs with this role's temporary credentials,
#                 which Meridian's S3 client takes from the AWS credential
#                 chain (instance profile through IMDSv2, refreshed before
#                 they expire); MERIDIAN_S3_ACCESS_KEY_ID and
#                 MERIDIAN_S3_SECRET_ACCESS_KEY, both set, would override it
#                 with static keys (for S3-compatible stores): the user data
#                 sets neither.
#   foundationdb: the cluster file and the fdbcli configuration documents;
#                 publishing its status metrics.
# Every instance role also gets AmazonSSMManagedInstanceCore: Session
# Manager is the only way onto a host (no SSH, no key pairs).
# Brokers (SASL/SCRAM) and the store (FoundationDB) are reached by network
# and secret, not IAM, so no IAM statement names them.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

locals {
  instance_roles = toset(["gateway", "core", "foundationdb"])
  # What each instance role reads from Secrets Manager.
  role_secrets = {
    gateway      = [aws_secretsmanager_secret.this["ca"].arn, aws_secretsmanager_secret.this["gateway"].arn, aws_secretsmanager_secret.this["edge"].arn]
    core         = [aws_secretsmanager_secret.this["ca"].arn, aws_secretsmanager_secret.this["core"].arn, aws_secretsmanager_secret.kafka_scram.arn]
    foundationdb = []
  }
}

resource "aws_iam_role" "instance" {
  for_each = local.instance_roles

  name                 = "${local.prefix}-${each.key}"
  description          = "Meridian ${var.name}: ${each.key} instances"
  assume_role_policy   = data.aws_iam_policy_document.ec2_assume.json
  max_session_duration = 3600

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm_managed" {
  for_each = local.instance_roles

  role       = aws_iam_role.instance[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name = "${local.prefix}-gateway"
  role = aws_iam_role.instance["gateway"].name
  tags = local.tags
}

resource "aws_iam_instance_profile" "core" {
  name = "${local.prefix}-core"
  role = aws_iam_role.instance["core"].name
  tags = local.tags
}

resource "aws_iam_instance_profile" "fdb" {
  name = "${local.prefix}-foundationdb"
  role = aws_iam_role.instance["foundationdb"].name
  tags = local.tags
}

data "aws_iam_policy_document" "meridian_process" {
  for_each = toset(["gateway", "core"])

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.role_secrets[each.key]
  }

  statement {
    sid       = "DecryptOwnSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.platform.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = concat(
        ["secretsmanager.${local.aws_region}.amazonaws.com"],
        each.key == "core" ? ["ssm.${local.aws_region}.amazonaws.com"] : [],
      )
    }
  }

  statement {
    sid       = "FetchRelease"
    actions   = ["s3:GetObject"]
    resources = [local.release_object_arn]
  }

  statement {
    sid = "ShipLogsAndMetrics"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = [
      "${aws_cloudwatch_log_group.process[each.key].arn}:*",
      "${aws_cloudwatch_log_group.prometheus.arn}:*",
    ]
  }

  dynamic "statement" {
    for_each = each.key == "core" ? [1] : []

    content {
      sid       = "ReadClusterFile"
      actions   = ["ssm:GetParameter"]
      resources = [aws_ssm_parameter.fdb_cluster.arn]
    }
  }
}

resource "aws_iam_role_policy" "meridian_process" {
  for_each = toset(["gateway", "core"])

  name   = "meridian-${each.key}"
  role   = aws_iam_role.instance[each.key].id
  policy = data.aws_iam_policy_document.meridian_process[each.key].json
}

data "aws_iam_policy_document" "foundationdb" {
  # The cluster file at boot; the fileconfigure documents for the operator
  # who configures the database from a session on a host.
  statement {
    sid       = "ReadClusterFileAndConfiguration"
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.fdb_cluster.arn], [for parameter in aws_ssm_parameter.fdb_configure : parameter.arn])
  }

  statement {
    sid       = "DecryptClusterFile"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.platform.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${local.aws_region}.amazonaws.com"]
    }
  }

  # PutMetricData takes no resource; the namespace condition is the limit.
  statement {
    sid       = "PublishClusterStatus"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.observability.metrics_namespace]
    }
  }
}

resource "aws_iam_role_policy" "foundationdb" {
  name   = "meridian-foundationdb"
  role   = aws_iam_role.instance["foundationdb"].id
  policy = data.aws_iam_policy_document.foundationdb.json
}

# --- the core's media access -------------------------------------------------
# A presigned URL carries the signer's rights: S3 checks this role's
# policy when the client uses the URL, and the URL stops working when the
# role credentials it was signed with expire (docs/terraform.md, "IAM").

data "aws_iam_policy_document" "core_media" {
  # HeadBucket (the core checks its bucket answers before presigning an
  # upload) needs ListBucket.
  statement {
    sid       = "OwnBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.media.arn]
  }

  statement {
    sid       = "OwnMedia"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.media.arn}/*"]
  }

  statement {
    sid       = "OwnMediaKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.media.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.aws_region}.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(local.peers) > 0 ? [1] : []

    content {
      sid       = "PeerMediaReadOnly"
      actions   = ["s3:GetObject"]
      resources = [for peer in values(local.peers) : "arn:${local.partition}:s3:::${peer.bucket}/*"]
    }
  }

  # The peers' media keys are in other AWS regions and other stacks: any
  # key of this account, but only as S3 uses it for a peer bucket's objects.
  dynamic "statement" {
    for_each = local.peers

    content {
      sid       = "PeerMediaKey${replace(title(replace(statement.key, "-", " ")), " ", "")}"
      actions   = ["kms:Decrypt"]
      resources = ["arn:${local.partition}:kms:${statement.value.aws_region}:${local.account_id}:key/*"]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${statement.value.aws_region}.amazonaws.com"]
      }

      condition {
        test     = "StringLike"
        variable = "kms:EncryptionContext:aws:s3:arn"
        values   = ["arn:${local.partition}:s3:::${statement.value.bucket}", "arn:${local.partition}:s3:::${statement.value.bucket}/*"]
      }
    }
  }
}

resource "aws_iam_role_policy" "core_media" {
  name   = "meridian-core-media"
  role   = aws_iam_role.instance["core"].id
  policy = data.aws_iam_policy_document.core_media.json
}

# --- flow logs and replication --------------------------------------------------

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.prefix}-flow-logs"
  description        = "Meridian ${var.name}: VPC flow logs to CloudWatch Logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogGroups",
      "logs:DescribeLogStreams",
    ]
    resources = [aws_cloudwatch_log_group.flow_logs.arn, "${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

data "aws_iam_policy_document" "s3_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "media_replication" {
  count = local.media_replication == null ? 0 : 1

  name               = "${local.prefix}-media-replication"
  description        = "Meridian ${var.name}: S3 replication of the media bucket"
  assume_role_policy = data.aws_iam_policy_document.s3_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "media_replication" {
  count = local.media_replication == null ? 0 : 1

  statement {
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = [aws_s3_bucket.media.arn]
  }

  statement {
    actions   = ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"]
    resources = ["${aws_s3_bucket.media.arn}/*"]
  }

  statement {
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = ["${local.media_replication.destination_bucket_arn}/*"]
  }

  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.media.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.aws_region}.amazonaws.com"]
    }
  }

  statement {
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [local.media_replication.destination_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${split(":", local.media_replication.destination_kms_key_arn)[3]}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "media_replication" {
  count = local.media_replication == null ? 0 : 1

  name   = "media-replication"
  role   = aws_iam_role.media_replication[0].id
  policy = data.aws_iam_policy_document.media_replication[0].json
}
