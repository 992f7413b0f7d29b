# The private zone meridian.internal: core.<region>.meridian.internal for
# every region, resolvable from every region's VPC (each region stack
# associates its VPC and publishes its core's record: modules/region,
# dns.tf).
#
# A private zone cannot be created without a VPC, and the region stacks
# that associate their VPCs with it need it first (its id). So it is
# created with an empty anchor VPC of its own: no subnets, no gateway, no
# routes, no instances: free, and it keeps the zone independent of which
# regions exist (adding or removing a region never touches the zone).

resource "aws_vpc" "dns_anchor" {
  cidr_block           = var.dns_anchor_vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = "meridian-dns-anchor" })
}

# Nothing runs in the anchor VPC; its default group is emptied anyway.
resource "aws_default_security_group" "dns_anchor" {
  vpc_id = aws_vpc.dns_anchor.id
  tags   = merge(var.tags, { Name = "meridian-dns-anchor-default-unused" })
}

resource "aws_route53_zone" "internal" {
  name    = var.internal_domain
  comment = "Meridian: cores, private to the regions' VPCs"

  vpc {
    vpc_id = aws_vpc.dns_anchor.id
  }

  tags = var.tags

  lifecycle {
    # The regions' associations are aws_route53_zone_association resources
    # of their stacks; the inline block only holds the anchor.
    ignore_changes = [vpc]
  }
}
