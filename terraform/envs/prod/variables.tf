# The production deployment. `regions` is the one source of truth for what
# regions exist and how they are addressed: regions.auto.tfvars.json, written
# by `meridian terraform-vars` from regions/*.toml (a test fails when the two
# disagree). Everything else sizes every region alike; the attributes and
# defaults of the sizing objects are those of modules/region/variables.tf,
# and an object given here overrides only the attributes it names.

variable "regions" {
  type = map(object({
    aws_region             = string
    vpc_cidr               = string
    gateway_host           = string
    gateway_port           = number
    core_host              = string
    core_port              = number
    bucket                 = string
    peers                  = list(string)
    client_prefixes        = list(string)
    max_clock_offset_ms    = number
    log_partitions         = number
    log_replication_factor = number
  }))
  description = "Every Meridian region, keyed by name (generated: regions.auto.tfvars.json). aws_region and vpc_cidr come from the region file's [aws] table; the hosts and ports from [advertise]; bucket from [s3]; peers resolved (absent in the file: every other region); client_prefixes from [geodns]; max_clock_offset_ms from [clock]; log_* from [log]."

  validation {
    condition     = alltrue([for name in keys(var.regions) : can(regex("^[a-z0-9-]{1,32}$", name))])
    error_message = "Region names are 1-32 characters of [a-z0-9-]."
  }

  validation {
    condition = alltrue(flatten([
      for name, region in var.regions : [for peer in region.peers : contains(keys(var.regions), peer) && peer != name]
    ]))
    error_message = "Every peer is another region of the map."
  }

  validation {
    condition = (
      alltrue([for region in values(var.regions) : can(cidrsubnet(region.vpc_cidr, 8, 0)) && try(tonumber(split("/", region.vpc_cidr)[1]) == 16, false)]) &&
      length(distinct([for region in values(var.regions) : region.vpc_cidr])) == length(var.regions)
    )
    error_message = "Every vpc_cidr is a /16 of its own (distinct /16s never overlap, which VPC peering requires)."
  }

  validation {
    condition     = alltrue([for name, region in var.regions : region.core_host == "core.${name}.${var.internal_domain}" && endswith(region.gateway_host, ".${var.client_domain}")])
    error_message = "core_host must be core.<region>.<internal_domain> (the private zone's record) and gateway_host a name under client_domain (the public zone's record)."
  }
}

variable "global_aws_region" {
  type        = string
  default     = "us-east-1"
  description = "AWS region of the default provider: Route 53 (global), the private zone's anchor VPC. The peerings name their own regions."
}

variable "client_domain" {
  type        = string
  default     = "meridian.example"
  description = "Public domain of the client endpoints (gw.<domain>, gw.<region>.<domain>)."
}

variable "internal_domain" {
  type        = string
  default     = "meridian.internal"
  description = "Private domain of the cores (core.<region>.<domain>), as the region files advertise them."
}

variable "release" {
  type        = any
  description = "What the instances run: {meridian_url = \"s3://bucket/key\" of the meridian binary (linux x86_64, built with --features fdb)}. A pinned ami_id differs per AWS region: set it in region_overrides. See modules/region/variables.tf."
}

variable "network" {
  type        = any
  default     = {}
  description = "VPC settings for every region (single_nat_gateway, availability_zones, flow_log_traffic_type): modules/region/variables.tf."
}

variable "edge" {
  type        = any
  default     = {}
  description = "The gateways' NLB (tcp_idle_timeout_seconds, deregistration_delay_seconds, health_check_interval_seconds): modules/region/variables.tf."
}

variable "gateways" {
  type        = any
  default     = {}
  description = "The gateways' group (instance_type, min_size, max_size, desired_capacity, cpu_target_percent, root_volume_size_gb, admin_port): modules/region/variables.tf."
}

variable "core" {
  type        = any
  default     = {}
  description = "The core (instance_type, instances = 0 or 1, admin_port, root_volume_size_gb): modules/region/variables.tf."
}

variable "foundationdb" {
  type        = any
  default     = {}
  description = "Each region's FoundationDB cluster (hosts, instance types, EBS data volumes, redundancy, ports): modules/region/variables.tf."
}

variable "kafka" {
  type        = any
  default     = {}
  description = "Each region's MSK cluster (version, broker type and count, volume size, SCRAM password version): modules/region/variables.tf."
}

variable "media" {
  type        = any
  default     = {}
  description = "Media buckets (expiry_days, cors_allowed_origins, replication by source region): modules/region/variables.tf."
}

variable "observability" {
  type        = any
  default     = {}
  description = "Metrics namespace, alarm e-mail, log retention and alarm thresholds: modules/region/variables.tf."
}

variable "region_overrides" {
  type        = any
  default     = {}
  description = "Per-region settings over the shared ones, by region then group: e.g. { \"us-east\" = { gateways = { min_size = 6 }, release = { ami_id = \"ami-…\" } } }. Groups: release, network, edge, gateways, core, foundationdb, kafka, media, observability. A pinned ami_id is per AWS region, so it belongs here."

  validation {
    condition     = alltrue([for name in keys(var.region_overrides) : contains(keys(var.regions), name)])
    error_message = "region_overrides names regions of `regions` only."
  }

  validation {
    condition = alltrue(flatten([
      for overrides in values(var.region_overrides) : [
        for group in keys(overrides) : contains(["release", "network", "edge", "gateways", "core", "foundationdb", "kafka", "media", "observability"], group)
      ]
    ]))
    error_message = "region_overrides groups are release, network, edge, gateways, core, foundationdb, kafka, media and observability."
  }
}

variable "health_check" {
  type        = any
  default     = {}
  description = "Route 53 health checks of the regions' gateways (request_interval, failure_threshold): modules/global/variables.tf."
}

variable "tags" {
  type = map(string)
  default = {
    Project     = "meridian"
    Environment = "prod"
  }
  description = "Tags on every resource, through every provider configuration's default_tags (main.tf, regions.tf)."
}
