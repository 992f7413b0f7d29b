output "client_endpoint" {
  description = "The name clients connect to (REST and WebSocket over TLS): latency-routed to the nearest healthy region."
  value       = "gw.${var.client_domain}"
}

output "region_endpoints" {
  description = "Each region's own client name (gw.<region>.<domain>), by region."
  value       = { for name, region in var.regions : name => region.gateway_host }
}

output "public_zone_id" {
  description = "Hosted zone of the client domain."
  value       = aws_route53_zone.client.zone_id
}

output "name_servers" {
  description = "Name servers of the client domain's zone: delegate the domain to them (NS records at the parent)."
  value       = aws_route53_zone.client.name_servers
}

output "internal_zone_id" {
  description = "Private zone meridian.internal, which every region stack associates its VPC with."
  value       = aws_route53_zone.internal.zone_id
}

output "internal_zone_name" {
  description = "Name of the private zone."
  value       = aws_route53_zone.internal.name
}

output "health_check_ids" {
  description = "Route 53 health check of each region's gateways, by region (watch them in a failover drill)."
  value       = { for name, check in aws_route53_health_check.gateway : name => check.id }
}

output "peering_connection_ids" {
  description = "VPC peering connection of each region pair (\"a/b\")."
  value       = { for key, peering in aws_vpc_peering_connection.pair : key => peering.id }
}
