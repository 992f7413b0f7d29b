# Three customer managed keys per region, split by who needs to decrypt:
#   platform: secrets (TLS identities, SCRAM), SSM parameters, log
#             groups, the alarm topic: what the instances read at boot and
#             what AWS services write for operators;
#   data:     FoundationDB's EBS volumes and MSK at rest: only AWS services
#             use it, through grants;
#   media:    the media bucket: the core's role (and the other regions'
#             core roles, read-only, through S3) decrypts with it.
# Each key policy lets the account's IAM policies grant use of the key
# (the first statement); who may actually use it is in iam.tf.

# Key policies are JSON here, not aws_iam_policy_document: checkov's
# identity-policy checks (CKV_AWS_109, 111, 356) read a key policy's
# mandatory Resource "*" (which means "this key") as "every resource".
# Written this way they keep applying to every identity policy of the
# stack instead of being skipped for all of them.
locals {
  key_policy_account_statement = {
    Sid       = "AccountIAMPolicies"
    Effect    = "Allow"
    Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
    Action    = "kms:*"
    Resource  = "*"
  }

  account_only_key_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [local.key_policy_account_statement]
  })

  platform_key_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      local.key_policy_account_statement,
      # CloudWatch Logs encrypts this region's log groups, and only those.
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.aws_region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.aws_region}:${local.account_id}:log-group:/meridian/${var.name}/*"
          }
        }
      },
      # CloudWatch alarms publish to the encrypted alarm topic.
      {
        Sid       = "CloudWatchAlarmsToSns"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
    ]
  })
}

resource "aws_kms_key" "platform" {
  description             = "Meridian ${var.name}: secrets, parameters, logs, alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = local.platform_key_policy

  tags = local.tags
}

resource "aws_kms_alias" "platform" {
  name          = "alias/${local.prefix}-platform"
  target_key_id = aws_kms_key.platform.key_id
}

resource "aws_kms_key" "data" {
  description             = "Meridian ${var.name}: FoundationDB volumes, MSK at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = local.account_only_key_policy

  tags = local.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.prefix}-data"
  target_key_id = aws_kms_key.data.key_id
}

resource "aws_kms_key" "media" {
  description             = "Meridian ${var.name}: media bucket"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = local.account_only_key_policy

  tags = local.tags
}

resource "aws_kms_alias" "media" {
  name          = "alias/${local.prefix}-media"
  target_key_id = aws_kms_key.media.key_id
}
