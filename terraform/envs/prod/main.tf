# Meridian in production: the global pieces (public and private DNS, the
# health checks, the peerings between regions) and one stack per region
# (regions.tf, generated from regions/*.toml by `meridian terraform-vars`).
#
# Terraform orders the work itself; what depends on what:
#   module.global's zones and anchor VPC depend on nothing;
#   each region stack needs the private zone's id (its VPC association and
#   its core's record), nothing else of module.global;
#   module.global's records, health checks and peerings need the stacks'
#   NLBs, VPCs and route tables.
# So one `terraform apply` does it all; docs/terraform.md gives the first
# deployment's steps (zones and delegation first, secrets and FoundationDB's
# configuration before the fleets start).

terraform {
  # State: an S3 bucket with versioning and a lock, made beforehand (not by
  # this configuration). Left commented so that `terraform init` works
  # without one; fill in and uncomment before the first apply.
  #
  # backend "s3" {
  #   bucket       = "<state bucket>"
  #   key          = "meridian/prod/terraform.tfstate"
  #   region       = "<state bucket region>"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

# Route 53 is global; the anchor VPC of the private zone lives here. The
# peerings (module.global) name each side's region on the resource itself.
# Tags come from default_tags here and in regions.tf, so the modules get
# no `tags` of their own.
provider "aws" {
  region = var.global_aws_region

  default_tags {
    tags = var.tags
  }
}

# Every region gets the shared settings, with its own overrides (if any)
# merged over them attribute by attribute: region_overrides["us-east"] =
# { gateways = { min_size = 6 } } changes only that for us-east. The
# region blocks (regions.tf) read their settings from here, so a new
# setting within a group never changes what `meridian terraform-vars`
# generates.
locals {
  # The web client (/app on every gateway) PUTs and GETs media with
  # presigned URLs from the page's origin: the service name and each
  # region's gateway name are always allowed, besides media's own list.
  web_client_origins = concat(
    ["https://gw.${var.client_domain}"],
    [for name, region in var.regions : "https://${region.gateway_host}"],
  )
  media = merge(var.media, {
    cors_allowed_origins = distinct(concat(local.web_client_origins, try(var.media.cors_allowed_origins, [])))
  })

  shared_settings = {
    release       = var.release
    network       = var.network
    edge          = var.edge
    gateways      = var.gateways
    core          = var.core
    foundationdb  = var.foundationdb
    kafka         = var.kafka
    media         = local.media
    observability = var.observability
  }

  region_settings = {
    for name in keys(var.regions) : name => {
      for group, shared in local.shared_settings : group => merge(shared, try(var.region_overrides[name][group], {}))
    }
  }
}

module "global" {
  source = "../../modules/global"

  client_domain   = var.client_domain
  internal_domain = var.internal_domain
  health_check    = var.health_check

  regions = {
    for name, region in var.regions : name => {
      aws_region              = region.aws_region
      vpc_cidr                = region.vpc_cidr
      gateway_host            = region.gateway_host
      gateway_port            = region.gateway_port
      peers                   = region.peers
      vpc_id                  = local.region_stacks[name].vpc_id
      private_route_table_ids = local.region_stacks[name].private_route_table_ids
      gateway_nlb_dns_name    = local.region_stacks[name].gateway_nlb_dns_name
      gateway_nlb_zone_id     = local.region_stacks[name].gateway_nlb_zone_id
    }
  }
}
