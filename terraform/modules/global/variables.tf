variable "client_domain" {
  type        = string
  description = "The public domain clients use (e.g. meridian.example): this module creates its hosted zone, `gw.<domain>` (latency-routed to every healthy region) and `gw.<region>.<domain>` per region. Delegate the zone's name servers (output name_servers) from the parent domain."

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.client_domain))
    error_message = "client_domain is a lower-case DNS name."
  }
}

variable "internal_domain" {
  type        = string
  default     = "meridian.internal"
  description = "The private zone every region's VPC resolves; the region files advertise cores as core.<region>.<internal_domain>."
}

variable "dns_anchor_vpc_cidr" {
  type        = string
  default     = "10.255.255.0/28"
  description = "CIDR of the empty VPC that anchors the private zone (a private zone cannot exist without a VPC, and the regions' VPCs come later). Nothing runs in it and nothing routes to it, so it may overlap anything."
}

variable "regions" {
  type = map(object({
    aws_region              = string
    vpc_cidr                = string
    gateway_host            = string
    gateway_port            = number
    peers                   = list(string)
    vpc_id                  = string
    private_route_table_ids = list(string)
    gateway_nlb_dns_name    = string
    gateway_nlb_zone_id     = string
  }))
  description = "Every region, keyed by name: its AWS region, client name and port, peers (from regions.auto.tfvars.json), and what its stack created (VPC, private route tables, the gateways' NLB)."

  validation {
    condition     = alltrue([for region in values(var.regions) : length(region.private_route_table_ids) == 3])
    error_message = "Every region has three private route tables (modules/region: one per AZ)."
  }
}

variable "health_check" {
  type = object({
    request_interval  = optional(number, 10)
    failure_threshold = optional(number, 3)
  })
  default     = {}
  description = "Route 53 health checks of each region's gateways (HTTPS GET /readyz through its NLB): seconds between checks (10 or 30) and consecutive failures before the region leaves gw.<domain>. 10 s x 3 takes an unhealthy region out in about 30 s plus the record's TTL."
  nullable    = false

  validation {
    condition     = contains([10, 30], var.health_check.request_interval) && var.health_check.failure_threshold >= 1 && var.health_check.failure_threshold <= 10
    error_message = "health_check.request_interval is 10 or 30; failure_threshold is 1-10."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags added to every resource."
  nullable    = false
}
