# Inter-region connectivity for the core port: a VPC peering connection
# between every pair of regions that peer (either names the other), and
# routes to the other's CIDR in both sides' private route tables. Cores
# and gateways reach the peers' internal core NLBs through them; the
# security groups (modules/region, security.tf) admit only the core port.
#
# Provider 6's per-resource `region` argument puts each resource in the
# right AWS region from this one provider configuration, so the pairs are
# a for_each over the region list: a module cannot take a dynamic number of
# provider configurations, and needs none here. (With provider 5 this took
# a generated provider alias per region and a generated block per pair.)
#
# Why peering rather than a transit gateway: N regions need N(N-1)/2
# peerings (3 for 3, 10 for 5), which cost nothing by the hour, and traffic
# pays only inter-region transfer. A transit gateway per region with
# peering attachments costs about 36 USD a month per attachment and
# 0.02 USD per GB processed on top, and pays off only past about 10
# regions or when other VPCs must join. Peering is not transitive, which
# suits Meridian: every region talks to its peers directly.

locals {
  # "a/b" with a < b, for every pair where a or b lists the other.
  pair_keys = distinct(flatten([
    for name, region in var.regions : [for peer in region.peers : join("/", sort([name, peer]))]
  ]))

  pairs = {
    for key in local.pair_keys : key => {
      requester = split("/", key)[0]
      accepter  = split("/", key)[1]
    }
  }

  # Both directions, each of the three private route tables of a side.
  peering_routes = merge(flatten([
    for key, pair in local.pairs : [
      for direction in [[pair.requester, pair.accepter], [pair.accepter, pair.requester]] : {
        for index in range(3) : "${key}/${direction[0]}/${index}" => {
          pair  = key
          from  = direction[0]
          to    = direction[1]
          index = index
        }
      }
    ]
  ])...)
}

resource "aws_vpc_peering_connection" "pair" {
  for_each = local.pairs

  region      = var.regions[each.value.requester].aws_region
  vpc_id      = var.regions[each.value.requester].vpc_id
  peer_vpc_id = var.regions[each.value.accepter].vpc_id
  peer_region = var.regions[each.value.accepter].aws_region

  tags = merge(var.tags, { Name = "meridian-${each.value.requester}-${each.value.accepter}" })
}

resource "aws_vpc_peering_connection_accepter" "pair" {
  for_each = local.pairs

  region                    = var.regions[each.value.accepter].aws_region
  vpc_peering_connection_id = aws_vpc_peering_connection.pair[each.key].id
  auto_accept               = true

  tags = merge(var.tags, { Name = "meridian-${each.value.requester}-${each.value.accepter}" })
}

resource "aws_route" "peer" {
  for_each = local.peering_routes

  region                 = var.regions[each.value.from].aws_region
  route_table_id         = var.regions[each.value.from].private_route_table_ids[each.value.index]
  destination_cidr_block = var.regions[each.value.to].vpc_cidr
  # The accepter's id, so that no route is made before the peering is
  # active.
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.pair[each.value.pair].vpc_peering_connection_id
}
