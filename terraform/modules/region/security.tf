# Who reaches what. Inbound, only:
#   clients (anywhere)          -> gateway NLB :443 -> gateways :443
#   gateways (this region)      -> core NLB :7443   -> core :7443
#   peer regions' VPCs          -> core NLB :7443   (their cores' replication
#                                  links and their gateways' calls: Meridian
#                                  serves both on the core port)
#   this VPC (monitoring, the core NLB's health checks) -> core :9100
#   this VPC (monitoring)       -> gateways :9100 (their plaintext admin
#                                  port: /metrics is served there only, not
#                                  on the client port the public NLB exposes)
#   core, FoundationDB hosts    -> FoundationDB :4500-4599
#   core                        -> MSK :9096 (SASL/SCRAM over TLS)
# Both load balancers hand connections over from their own addresses
# (preserve_client_ip off, nlb.tf), so targets admit the balancer's security
# group, and the balancer's group says who may connect.
# Egress is listed too: HTTPS to AWS APIs and package hosts goes through
# the NAT gateways (no interface endpoints: seven of them in three AZs cost
# more than the NAT traffic). DNS (the VPC resolver), NTP (Amazon Time
# Sync) and instance metadata are link-local and not filtered by security
# groups.

locals {
  core_port    = local.region.core_port
  gateway_port = local.region.gateway_port
  kafka_port   = 9096 # MSK's SASL/SCRAM listener
}

resource "aws_security_group" "gateway_nlb" {
  name        = "${local.prefix}-gateway-nlb"
  description = "Meridian ${var.name}: the gateways' public network load balancer"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-gateway-nlb" })
}

resource "aws_security_group" "gateway" {
  name        = "${local.prefix}-gateway"
  description = "Meridian ${var.name}: gateways"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-gateway" })
}

resource "aws_security_group" "core_nlb" {
  name        = "${local.prefix}-core-nlb"
  description = "Meridian ${var.name}: the core's internal network load balancer"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-core-nlb" })
}

resource "aws_security_group" "core" {
  name        = "${local.prefix}-core"
  description = "Meridian ${var.name}: the core"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-core" })
}

resource "aws_security_group" "fdb" {
  name        = "${local.prefix}-foundationdb"
  description = "Meridian ${var.name}: FoundationDB hosts"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-foundationdb" })
}

resource "aws_security_group" "msk" {
  name        = "${local.prefix}-msk"
  description = "Meridian ${var.name}: MSK brokers"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-msk" })
}

# --- gateway NLB ------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "gateway_nlb_from_clients" {
  security_group_id = aws_security_group.gateway_nlb.id
  description       = "Clients (REST and WebSocket over TLS) from anywhere"
  ip_protocol       = "tcp"
  from_port         = local.gateway_port
  to_port           = local.gateway_port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "gateway_nlb_to_gateways" {
  security_group_id            = aws_security_group.gateway_nlb.id
  description                  = "Forwarded client connections and HTTPS health checks on /readyz"
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
  referenced_security_group_id = aws_security_group.gateway.id
}

# --- gateways ---------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "gateway_from_nlb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "Client connections (with their PROXY v2 header) and health checks, only through the NLB"
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
  referenced_security_group_id = aws_security_group.gateway_nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_admin_from_vpc" {
  security_group_id = aws_security_group.gateway.id
  description       = "Admin port (plaintext /metrics, /healthz, /readyz): monitoring, from this VPC only"
  ip_protocol       = "tcp"
  from_port         = var.gateways.admin_port
  to_port           = var.gateways.admin_port
  cidr_ipv4         = local.region.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "gateway_to_core_nlb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "This region's core (gRPC, mutual TLS) through its internal NLB"
  ip_protocol                  = "tcp"
  from_port                    = local.core_port
  to_port                      = local.core_port
  referenced_security_group_id = aws_security_group.core_nlb.id
}

resource "aws_vpc_security_group_egress_rule" "gateway_to_peer_cores" {
  for_each = toset(local.peer_cidrs)

  security_group_id = aws_security_group.gateway.id
  description       = "Peer regions' cores: a gateway serves users of every region and calls their home core"
  ip_protocol       = "tcp"
  from_port         = local.core_port
  to_port           = local.core_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "gateway_to_https" {
  security_group_id = aws_security_group.gateway.id
  description       = "AWS APIs (Secrets Manager, SSM, CloudWatch), the release artifact and packages, through NAT"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- core NLB ---------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "core_nlb_from_gateways" {
  security_group_id            = aws_security_group.core_nlb.id
  description                  = "This region's gateways calling their core"
  ip_protocol                  = "tcp"
  from_port                    = local.core_port
  to_port                      = local.core_port
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_ingress_rule" "core_nlb_from_peers" {
  for_each = toset(local.peer_cidrs)

  security_group_id = aws_security_group.core_nlb.id
  description       = "A peer region (over VPC peering): its replication links and its gateways' calls, on the one core port"
  ip_protocol       = "tcp"
  from_port         = local.core_port
  to_port           = local.core_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "core_nlb_to_core" {
  security_group_id            = aws_security_group.core_nlb.id
  description                  = "Forwarded core connections"
  ip_protocol                  = "tcp"
  from_port                    = local.core_port
  to_port                      = local.core_port
  referenced_security_group_id = aws_security_group.core.id
}

resource "aws_vpc_security_group_egress_rule" "core_nlb_to_core_admin" {
  security_group_id            = aws_security_group.core_nlb.id
  description                  = "Health checks on the core's /readyz (admin port)"
  ip_protocol                  = "tcp"
  from_port                    = var.core.admin_port
  to_port                      = var.core.admin_port
  referenced_security_group_id = aws_security_group.core.id
}

# --- core -------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "core_from_nlb" {
  security_group_id            = aws_security_group.core.id
  description                  = "Core gRPC only through the internal NLB (callers are authenticated by mutual TLS)"
  ip_protocol                  = "tcp"
  from_port                    = local.core_port
  to_port                      = local.core_port
  referenced_security_group_id = aws_security_group.core_nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "core_admin_from_vpc" {
  security_group_id = aws_security_group.core.id
  description       = "Admin port (plaintext /metrics, /healthz, /readyz): monitoring and the NLB's health checks, from this VPC only"
  ip_protocol       = "tcp"
  from_port         = var.core.admin_port
  to_port           = var.core.admin_port
  cidr_ipv4         = local.region.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "core_to_peer_cores" {
  for_each = toset(local.peer_cidrs)

  security_group_id = aws_security_group.core.id
  description       = "Replication links to a peer region's core"
  ip_protocol       = "tcp"
  from_port         = local.core_port
  to_port           = local.core_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "core_to_fdb" {
  security_group_id            = aws_security_group.core.id
  description                  = "The region's FoundationDB cluster (client to coordinators and servers)"
  ip_protocol                  = "tcp"
  from_port                    = var.foundationdb.port_range_start
  to_port                      = var.foundationdb.port_range_end
  referenced_security_group_id = aws_security_group.fdb.id
}

resource "aws_vpc_security_group_egress_rule" "core_to_msk" {
  security_group_id            = aws_security_group.core.id
  description                  = "The region's Kafka brokers (relays, link readers, topic creation)"
  ip_protocol                  = "tcp"
  from_port                    = local.kafka_port
  to_port                      = local.kafka_port
  referenced_security_group_id = aws_security_group.msk.id
}

resource "aws_vpc_security_group_egress_rule" "core_to_https" {
  security_group_id = aws_security_group.core.id
  description       = "AWS APIs (Secrets Manager, SSM, CloudWatch, S3 through its gateway endpoint), release artifact, packages"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- FoundationDB -------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "fdb_from_core" {
  security_group_id            = aws_security_group.fdb.id
  description                  = "The core, a FoundationDB client"
  ip_protocol                  = "tcp"
  from_port                    = var.foundationdb.port_range_start
  to_port                      = var.foundationdb.port_range_end
  referenced_security_group_id = aws_security_group.core.id
}

resource "aws_vpc_security_group_ingress_rule" "fdb_from_fdb" {
  security_group_id            = aws_security_group.fdb.id
  description                  = "FoundationDB processes talk to each other (coordinators, logs, storage, log routers)"
  ip_protocol                  = "tcp"
  from_port                    = var.foundationdb.port_range_start
  to_port                      = var.foundationdb.port_range_end
  referenced_security_group_id = aws_security_group.fdb.id
}

resource "aws_vpc_security_group_egress_rule" "fdb_to_fdb" {
  security_group_id            = aws_security_group.fdb.id
  description                  = "FoundationDB processes talk to each other"
  ip_protocol                  = "tcp"
  from_port                    = var.foundationdb.port_range_start
  to_port                      = var.foundationdb.port_range_end
  referenced_security_group_id = aws_security_group.fdb.id
}

resource "aws_vpc_security_group_egress_rule" "fdb_to_https" {
  security_group_id = aws_security_group.fdb.id
  description       = "AWS APIs (SSM, CloudWatch) and the FoundationDB packages, through NAT"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- MSK ----------------------------------------------------------------------
# Brokers replicate among themselves inside the MSK service; their ENIs here
# only take client connections, and make none.

resource "aws_vpc_security_group_ingress_rule" "msk_from_core" {
  security_group_id            = aws_security_group.msk.id
  description                  = "The core (SASL/SCRAM over TLS); nothing else in Meridian speaks Kafka"
  ip_protocol                  = "tcp"
  from_port                    = local.kafka_port
  to_port                      = local.kafka_port
  referenced_security_group_id = aws_security_group.core.id
}
