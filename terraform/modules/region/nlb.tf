# Two network load balancers:
#   gateway: internet-facing, TCP 443 passed through to the gateways, which
#            terminate client TLS themselves ([tls] edge_cert/edge_key);
#   core:    internal, TCP 7443 passed through to the core: mutual TLS runs
#            end to end between a caller and the core, so nothing in the
#            middle may terminate it. It gives the core a stable address
#            (core.<region>.meridian.internal) across instance replacements,
#            reachable from peer VPCs.

resource "aws_lb" "gateway" {
  name               = "${local.lb_prefix}-gw"
  load_balancer_type = "network"
  internal           = false
  subnets            = aws_subnet.public[*].id
  security_groups    = [aws_security_group.gateway_nlb.id]
  # Spread each client AZ's connections over every gateway, not only the
  # gateways of the NLB node's AZ (cross-AZ bytes are charged, an uneven
  # fleet is worse).
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.edge.deletion_protection

  tags = local.tags
}

resource "aws_lb_target_group" "gateway" {
  name        = "${local.lb_prefix}-gw"
  vpc_id      = aws_vpc.this.id
  port        = local.gateway_port
  protocol    = "TCP"
  target_type = "instance"

  # The gateways read the client's address from a PROXY protocol v2 header
  # ([edge] proxy_protocol = true), and only from their trusted proxies
  # ([edge] trusted_proxies = the public subnets, where the NLB's nodes
  # are). So the connection must come
  # from the NLB's own address, not the client's: client IP preservation
  # off. Per-address limits (registrations per minute) then count clients.
  proxy_protocol_v2  = true
  preserve_client_ip = "false"

  # Draining: a deregistered gateway keeps its WebSockets this long, then
  # the NLB resets them (connection_termination) and clients reconnect to
  # another gateway (the SDK backs off 50 ms doubling to 2 s).
  deregistration_delay   = var.edge.deregistration_delay_seconds
  connection_termination = true

  # A gateway whose /readyz fails has lost its core; its sessions end on
  # their own (close 1012). Do not also cut connections on a flapping
  # check: let them drain for the deregistration delay.
  target_health_state {
    enable_unhealthy_connection_termination = false
    unhealthy_draining_interval             = var.edge.deregistration_delay_seconds
  }

  # HTTPS on the client port: with proxy_protocol_v2 on, the NLB also sends
  # its health check connections a PROXY v2 header (without a client
  # address), which the gateway's listener accepts as a LOCAL header
  # (crates/seams/src/net/proxy.rs) before the TLS handshake. /readyz is
  # 200 while the gateway's stream to its region's core is up.
  health_check {
    protocol            = "HTTPS"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = var.edge.health_check_interval_seconds
    timeout             = 5
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "gateway" {
  load_balancer_arn = aws_lb.gateway.arn
  port              = local.gateway_port
  protocol          = "TCP"
  # Idle flows are kept this long (configurable on NLB TCP listeners, 60-6000
  # s, since 2024; it was fixed at 350 s). Gateways ping every WebSocket
  # every 20 s, so sessions never sit idle that long anyway.
  tcp_idle_timeout_seconds = var.edge.tcp_idle_timeout_seconds

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }

  tags = local.tags
}

resource "aws_lb" "core" {
  name                             = "${local.lb_prefix}-core"
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = aws_subnet.private[*].id
  security_groups                  = [aws_security_group.core_nlb.id]
  enable_cross_zone_load_balancing = true # the one core is in one AZ
  enable_deletion_protection       = var.edge.deletion_protection

  tags = local.tags
}

resource "aws_lb_target_group" "core" {
  name        = "${local.lb_prefix}-core"
  vpc_id      = aws_vpc.this.id
  port        = local.core_port
  protocol    = "TCP"
  target_type = "instance"

  # Connections reach the core from the NLB's address, so the core's
  # security group admits the NLB's group only and the NLB's group says
  # who may call (security.tf). The core identifies callers by their
  # certificates, not their addresses.
  preserve_client_ip = "false"

  # A replaced core's gRPC streams end; gateways and peer links reconnect
  # and resume (docs/operations.md).
  deregistration_delay   = 30
  connection_termination = true

  # The core's own readiness (its store takes commits), on its plaintext
  # admin port: the gRPC port answers mutual TLS only.
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.core.admin_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "core" {
  load_balancer_arn        = aws_lb.core.arn
  port                     = local.core_port
  protocol                 = "TCP"
  tcp_idle_timeout_seconds = var.edge.tcp_idle_timeout_seconds

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.core.arn
  }

  tags = local.tags
}
