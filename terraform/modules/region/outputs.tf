output "gateway_nlb_dns_name" {
  description = "DNS name of the gateways' public NLB (the target of gw.<domain> and gw.<region>.<domain>)."
  value       = aws_lb.gateway.dns_name
}

output "gateway_nlb_zone_id" {
  description = "Route 53 zone id of the gateways' NLB, for alias records."
  value       = aws_lb.gateway.zone_id
}

output "core_nlb_dns_name" {
  description = "DNS name of the core's internal NLB (core.<region>.meridian.internal is its alias)."
  value       = aws_lb.core.dns_name
}

output "core_host" {
  description = "The core's advertised name."
  value       = aws_route53_record.core.fqdn
}

output "vpc_id" {
  description = "The region's VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The region's VPC CIDR (the peers' security groups admit it on the core port)."
  value       = aws_vpc.this.cidr_block
}

output "private_route_table_ids" {
  description = "Route tables of the private and data subnets, one per AZ: modules/global adds the peer regions' routes to them."
  value       = aws_route_table.private[*].id
}

output "public_route_table_id" {
  description = "Route table of the public subnets."
  value       = aws_route_table.public.id
}

output "media_bucket_name" {
  description = "The media bucket."
  value       = aws_s3_bucket.media.bucket
}

output "media_bucket_arn" {
  description = "ARN of the media bucket (a replication destination for another region, if wanted)."
  value       = aws_s3_bucket.media.arn
}

output "media_kms_key_arn" {
  description = "The key that encrypts the media bucket (replica_kms_key_id when this bucket is a replication destination)."
  value       = aws_kms_key.media.arn
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers, SASL/SCRAM over TLS (port 9096): the region file's [log] brokers."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "kafka_topics" {
  description = "The topics this region's core creates at start, one per peer: meridian-replication.<this>.<destination>."
  value       = local.kafka_topics
}

output "fdb_cluster_parameter" {
  description = "SSM parameter holding the FoundationDB cluster file."
  value       = aws_ssm_parameter.fdb_cluster.name
}

output "fdb_configure_parameters" {
  description = "SSM parameters holding the fdbcli fileconfigure documents: bootstrap (first, on a new database), final (once the standby holds a replica)."
  value       = { for stage, parameter in aws_ssm_parameter.fdb_configure : stage => parameter.name }
}

output "fdb_hosts" {
  description = "FoundationDB hosts: key => {instance id, address, datacenter (AZ)}."
  value = {
    for key, host in local.fdb_hosts : key => {
      instance_id   = aws_instance.fdb[key].id
      private_ip    = host.private_ip
      datacenter_id = host.datacenter_id
    }
  }
}

output "secret_arns" {
  description = "Secrets whose values operators write (docs/terraform.md): ca, core, gateway, edge; the SCRAM secret is Terraform's."
  value = merge(
    { for key, secret in aws_secretsmanager_secret.this : key => secret.arn },
    { kafka_scram = aws_secretsmanager_secret.kafka_scram.arn },
  )
}

output "alarm_topic_arn" {
  description = "SNS topic of the region's alarms."
  value       = aws_sns_topic.alarms.arn
}

output "aws_region" {
  description = "The AWS region of the stack."
  value       = local.aws_region
}
