terraform {
  # 1.11: write-only arguments (secret_string_wo) and ephemeral resources keep
  # the generated Kafka SCRAM password out of the plan and the state.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # terraform/checks/aws-provider-schema.json is the 6.25.0 schema.
      version = "~> 6.25"
    }
  }
}
