# The region's media bucket. Clients upload and download directly, with
# URLs the core presigns (PUT bound to size, type and SHA-256; GET); the
# core's media check reads, copies and deletes objects. Media lives as long
# as messages do: 30 days.

locals {
  media_replication = lookup(var.media.replication, var.name, null)
}

resource "aws_s3_bucket" "media" {
  bucket = local.region.bucket
  tags   = local.tags
}

resource "aws_s3_bucket_ownership_controls" "media" {
  bucket = aws_s3_bucket.media.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "media" {
  bucket                  = aws_s3_bucket.media.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Versioning: required by replication, and an overwritten or deleted object
# stays recoverable until the noncurrent expiry below.
resource "aws_s3_bucket_versioning" "media" {
  bucket = aws_s3_bucket.media.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "media" {
  bucket = aws_s3_bucket.media.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.media.arn
    }
    # One KMS data key per bucket and period instead of per object: fewer
    # KMS requests (cost, throttling) at thousands of uploads a minute.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "media" {
  bucket = aws_s3_bucket.media.id

  rule {
    id     = "expire-media"
    status = "Enabled"

    filter {}

    expiration {
      days = var.media.expiry_days
    }

    # An overwritten or expired version is kept one day, then goes.
    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    # Uploads a client started and never finished.
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.media]
}

# Browsers PUT and GET with presigned URLs from the origins allowed; native
# clients need no CORS.
resource "aws_s3_bucket_cors_configuration" "media" {
  count = length(var.media.cors_allowed_origins) > 0 ? 1 : 0

  bucket = aws_s3_bucket.media.id

  cors_rule {
    allowed_methods = ["PUT", "GET", "HEAD"]
    allowed_origins = var.media.cors_allowed_origins
    # The presigned PUT signs content-type, content-length and the
    # SHA-256 checksum header; the browser must be allowed to send them.
    allowed_headers = ["content-type", "content-length", "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm"]
    expose_headers  = ["ETag"]
    max_age_seconds = 3600
  }
}

data "aws_iam_policy_document" "media_bucket" {
  statement {
    sid       = "DenyPlaintext"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.media.arn, "${aws_s3_bucket.media.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "media" {
  bucket = aws_s3_bucket.media.id
  policy = data.aws_iam_policy_document.media_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.media]
}

# Optional cross-region replication (Meridian never copies media between
# regions itself: a message's media stays in its sender's region, and
# other regions' cores presign downloads from there).
resource "aws_s3_bucket_replication_configuration" "media" {
  count = local.media_replication == null ? 0 : 1

  bucket = aws_s3_bucket.media.id
  role   = aws_iam_role.media_replication[0].arn

  rule {
    id     = "media"
    status = "Enabled"

    filter {}

    # Expiry removes objects on both sides by their own lifecycle rules.
    delete_marker_replication {
      status = "Disabled"
    }

    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }

    destination {
      bucket = local.media_replication.destination_bucket_arn

      encryption_configuration {
        replica_kms_key_id = local.media_replication.destination_kms_key_arn
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.media]
}
