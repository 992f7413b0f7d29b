terraform {
  # modules/region's write-only arguments (the Kafka SCRAM password) need
  # Terraform 1.11.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # terraform/checks/aws-provider-schema.json is the 6.25.0 schema.
      version = "~> 6.25"
    }
  }
}
