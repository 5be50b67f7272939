terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "endpoint" {
  type = string
}
variable "replica_description" {
  type    = string
  default = "replica in eu-west-1"
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  skip_region_validation      = true
  endpoints {
    kms = var.endpoint
  }
}

provider "aws" {
  alias                       = "replica"
  region                      = "eu-west-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  skip_region_validation      = true
  endpoints {
    kms = var.endpoint
  }
}

resource "aws_kms_key" "primary" {
  description             = "multi-Region primary"
  multi_region            = true
  enable_key_rotation     = true
  deletion_window_in_days = 7
}

resource "aws_kms_replica_key" "replica" {
  provider                = aws.replica
  description             = var.replica_description
  primary_key_arn         = aws_kms_key.primary.arn
  deletion_window_in_days = 7
  tags = {
    site = "dublin"
  }
}

resource "aws_kms_alias" "replica" {
  provider      = aws.replica
  name          = "alias/tf-replica"
  target_key_id = aws_kms_replica_key.replica.key_id
}

output "primary_arn" {
  value = aws_kms_key.primary.arn
}

output "replica_arn" {
  value = aws_kms_replica_key.replica.arn
}
