# Clients' names, in the public zone of var.client_domain:
#   gw.<domain>           latency-routed: each client resolver gets the
#                         lowest-latency region whose gateways pass their
#                         health check; an unhealthy region leaves the answer
#   gw.<region>.<domain>  one region, whatever its health: the names the
#                         region files advertise ([advertise] gateway), for
#                         clients that pin a region and for the SDK's
#                         fallbacks
# Both are aliases of the regions' gateway NLBs (no TTL of our own: Route 53
# answers alias records with the target's 60 s TTL).

resource "aws_route53_zone" "client" {
  name    = var.client_domain
  comment = "Meridian: client endpoints"
  tags    = var.tags
}

# HTTPS GET /readyz through each region's NLB, as a client would come in:
# 200 while at least the gateway that answers has its stream to the
# region's core. The check goes to the NLB's own name (it needs no
# delegation of the zone to work); Route 53 does not verify the certificate.
resource "aws_route53_health_check" "gateway" {
  for_each = var.regions

  type              = "HTTPS"
  fqdn              = each.value.gateway_nlb_dns_name
  port              = each.value.gateway_port
  resource_path     = "/readyz"
  enable_sni        = true
  request_interval  = var.health_check.request_interval
  failure_threshold = var.health_check.failure_threshold

  tags = merge(var.tags, { Name = "meridian-${each.key}-gateways", MeridianRegion = each.key })
}

resource "aws_route53_record" "client_latency" {
  for_each = var.regions

  zone_id         = aws_route53_zone.client.zone_id
  name            = "gw.${var.client_domain}"
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.gateway[each.key].id

  latency_routing_policy {
    region = each.value.aws_region
  }

  alias {
    name    = each.value.gateway_nlb_dns_name
    zone_id = each.value.gateway_nlb_zone_id
    # Also leave the answer when the NLB has no healthy target at all
    # (before the health check's failure threshold is reached).
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "region_gateway" {
  for_each = var.regions

  zone_id = aws_route53_zone.client.zone_id
  name    = each.value.gateway_host
  type    = "A"

  alias {
    name                   = each.value.gateway_nlb_dns_name
    zone_id                = each.value.gateway_nlb_zone_id
    evaluate_target_health = false
  }

  lifecycle {
    precondition {
      condition     = endswith(each.value.gateway_host, ".${var.client_domain}")
      error_message = "Region ${each.key}'s gateway_host ${each.value.gateway_host} is not in the client domain ${var.client_domain}."
    }
  }
}
