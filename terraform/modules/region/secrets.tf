# Service identities for the mutual TLS between gateways and cores, and the
# edge certificate. Terraform creates the secrets and who may read them;
# their values are written out of band (docs/terraform.md, "Secrets"), so
# no key material is in the state:
#   meridian/<region>/tls/ca
#            the deployment CA's certificate (PEM): every region holds the
#            same one; its key stays offline (`meridian certs init`)
#   meridian/<region>/tls/core.<region>
#            {"certificate": PEM, "private_key": PEM} of core.<region>
#   meridian/<region>/tls/gateway.<region>
#            {"certificate": PEM, "private_key": PEM} of gateway.<region>
#   meridian/<region>/tls/edge
#            {"certificate": PEM chain, "private_key": PEM} the gateways
#            serve clients with: a public CA's certificate for the client
#            names (gw.<domain> and gw.<region>.<domain>). TLS ends on the
#            gateways (the NLB passes TCP through), and ACM public
#            certificates cannot be exported to instances, so this is a
#            secret too. (Ending TLS on an NLB TLS listener with an ACM
#            certificate instead is the alternative: docs/terraform.md.)
# No S3 key is stored: the core signs S3 requests and presigned URLs with
# its instance role's temporary credentials (iam.tf). The SCRAM secret is
# msk.tf's.
# ACM Private CA (about 400 USD a month per CA) would issue the same
# identities; `meridian certs init` does it for free.

locals {
  secrets = {
    ca = {
      name        = "tls/ca"
      description = "TLS: the deployment CA certificate (PEM), the same in every region; written from `meridian certs init`."
    }
    core = {
      name        = "tls/core.${var.name}"
      description = "TLS: core.${var.name} certificate and key, JSON {certificate, private_key}; written from `meridian certs init`."
    }
    gateway = {
      name        = "tls/gateway.${var.name}"
      description = "TLS: gateway.${var.name} certificate and key, JSON {certificate, private_key}; written from `meridian certs init`."
    }
    edge = {
      name        = "tls/edge"
      description = "TLS: the certificate chain and key the gateways serve clients with, JSON {certificate, private_key}; from a public CA."
    }
  }
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.secrets

  name                    = "meridian/${var.name}/${each.value.name}"
  description             = each.value.description
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 30

  tags = local.tags
}
