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
variable "team" {
  type    = string
  default = "payments"
}
variable "size" {
  type    = number
  default = 1
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
    ec2 = var.endpoint
  }
}

resource "aws_kms_key" "ebs" {
  description             = "volumes"
  deletion_window_in_days = 7
}

resource "aws_ebs_encryption_by_default" "on" {
  enabled = true
}

resource "aws_ebs_default_kms_key" "default" {
  key_arn = aws_kms_key.ebs.arn
}

resource "aws_ebs_volume" "data" {
  availability_zone = "us-east-1a"
  size              = var.size
  type              = "gp3"
  encrypted         = true
  kms_key_id        = aws_kms_key.ebs.arn
  tags = {
    Name = "data"
    team = var.team
  }
}

resource "aws_ebs_snapshot" "nightly" {
  volume_id   = aws_ebs_volume.data.id
  description = "nightly"
  tags = {
    Name = "data-nightly"
  }
}

output "volume" {
  value = aws_ebs_volume.data.id
}
