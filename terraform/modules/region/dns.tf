# core.<region>.meridian.internal: the name the region files advertise for
# this core ([advertise] core), which gateways of every region and the
# peers' replication links dial. The private zone is modules/global's,
# shared by every region's VPC; this stack associates its own VPC with it
# (so that its gateways resolve every region's core) and publishes its
# core's name, an alias of the internal core NLB: peer VPCs reach the
# NLB's private addresses over VPC peering.

resource "aws_route53_zone_association" "internal" {
  zone_id = var.internal_zone_id
  vpc_id  = aws_vpc.this.id
}

resource "aws_route53_record" "core" {
  zone_id = var.internal_zone_id
  name    = local.region.core_host
  type    = "A"

  alias {
    name    = aws_lb.core.dns_name
    zone_id = aws_lb.core.zone_id
    # One core, one record: nothing to fail over to in DNS.
    evaluate_target_health = false
  }
}
