terraform {
  # As modules/region (write-only arguments there need 1.11).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.x: every resource takes a `region` argument, which the peerings
      # use to create each side in its own AWS region from one provider.
      # terraform/checks/aws-provider-schema.json is the 6.25.0 schema.
      version = "~> 6.25"
    }
  }
}
