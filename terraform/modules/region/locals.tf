data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

# The three AZs, named explicitly (default: <aws region>a, b, c): a closed
# set, so that an AZ AWS adds later never moves a subnet, a FoundationDB
# datacenter or an MSK broker. The data source checks they exist.
data "aws_availability_zones" "selected" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.az_names
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 3
      error_message = "The availability zones ${join(", ", local.az_names)} are not all available in ${local.aws_region}: set network.availability_zones."
    }
  }
}

locals {
  region     = var.regions[var.name]
  aws_region = local.region.aws_region
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id

  # Which regions this one replicates with, and how they reach it: the
  # peers' VPCs (their cores' replication links and their gateways both dial
  # this region's core port).
  peers      = { for peer in local.region.peers : peer => var.regions[peer] }
  peer_cidrs = sort([for peer in values(local.peers) : peer.vpc_cidr])

  # Three AZs, in a fixed role each for FoundationDB: [0] primary
  # datacenter, [1] standby datacenter, [2] satellite logs.
  az_names = var.network.availability_zones != null ? var.network.availability_zones : [for suffix in ["a", "b", "c"] : "${local.aws_region}${suffix}"]
  azs      = [for name in local.az_names : name if contains(data.aws_availability_zones.selected.names, name)]

  # Resource names. IAM names are account-wide (not per AWS region), so
  # every name carries the Meridian region's name. Load balancer and target
  # group names are capped at 32 characters.
  prefix    = "meridian-${var.name}"
  lb_prefix = trimsuffix(substr("mrd-${var.name}", 0, 27), "-")

  tags = merge(var.tags, {
    MeridianRegion = var.name
  })

  # Where a process finds what the region files name (templates/region.toml.tftpl).
  tls_dir          = "/etc/meridian/tls"
  regions_dir      = "/etc/meridian/regions"
  data_dir         = "/var/lib/meridian"
  fdb_cluster_path = "/etc/foundationdb/fdb.cluster"

  # The release artifact, for the instance roles' s3:GetObject.
  release_object_arn = "arn:${local.partition}:s3:::${trimprefix(var.release.meridian_url, "s3://")}"

  ami_id = var.release.ami_id != null ? var.release.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)
}

data "aws_ssm_parameter" "ami" {
  count = var.release.ami_id == null ? 1 : 0
  name  = var.release.ami_ssm_parameter
}
