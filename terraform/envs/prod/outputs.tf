output "client_endpoint" {
  description = "What clients connect to: https://<this> and wss://<this>/v1/ws."
  value       = module.global.client_endpoint
}

output "region_endpoints" {
  description = "Each region's own client name."
  value       = module.global.region_endpoints
}

output "name_servers" {
  description = "Delegate the client domain to these name servers."
  value       = module.global.name_servers
}

output "public_zone_id" {
  description = "Hosted zone of the client domain."
  value       = module.global.public_zone_id
}

output "internal_zone_id" {
  description = "Private zone of the cores."
  value       = module.global.internal_zone_id
}

output "health_check_ids" {
  description = "Route 53 health check of each region's gateways."
  value       = module.global.health_check_ids
}

output "regions" {
  description = "Per region: what operators and the region files need (NLB names, VPC, bucket, brokers, topics, FoundationDB parameters and hosts, secrets to fill, alarm topic)."
  value = {
    for name, stack in local.region_stacks : name => {
      aws_region               = stack.aws_region
      gateway_nlb_dns_name     = stack.gateway_nlb_dns_name
      gateway_nlb_zone_id      = stack.gateway_nlb_zone_id
      core_nlb_dns_name        = stack.core_nlb_dns_name
      core_host                = stack.core_host
      vpc_id                   = stack.vpc_id
      vpc_cidr                 = stack.vpc_cidr
      private_route_table_ids  = stack.private_route_table_ids
      public_route_table_id    = stack.public_route_table_id
      media_bucket_name        = stack.media_bucket_name
      media_bucket_arn         = stack.media_bucket_arn
      media_kms_key_arn        = stack.media_kms_key_arn
      kafka_bootstrap_brokers  = stack.kafka_bootstrap_brokers
      kafka_topics             = stack.kafka_topics
      fdb_cluster_parameter    = stack.fdb_cluster_parameter
      fdb_configure_parameters = stack.fdb_configure_parameters
      fdb_hosts                = stack.fdb_hosts
      secret_arns              = stack.secret_arns
      alarm_topic_arn          = stack.alarm_topic_arn
    }
  }
}
