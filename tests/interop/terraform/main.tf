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
variable "description" {
  type    = string
  default = "app data"
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

resource "aws_kms_key" "sym" {
  description             = var.description
  deletion_window_in_days = 7
  enable_key_rotation     = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "Account"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::111122223333:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
  tags = { team = "payments" }
}

resource "aws_kms_key" "rsa" {
  description              = "signing"
  customer_master_key_spec = "RSA_2048"
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 7
}

resource "aws_kms_key" "ecc" {
  description              = "ecc signing"
  customer_master_key_spec = "ECC_NIST_P256"
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 7
}

resource "aws_kms_key" "hmac" {
  description              = "mac"
  customer_master_key_spec = "HMAC_256"
  key_usage                = "GENERATE_VERIFY_MAC"
  deletion_window_in_days  = 7
}

resource "aws_kms_external_key" "ext" {
  description             = "imported"
  key_material_base64     = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
  deletion_window_in_days = 7
}

resource "aws_kms_alias" "sym" {
  name          = "alias/tf-app"
  target_key_id = aws_kms_key.sym.key_id
}

resource "aws_kms_alias" "ext" {
  name          = "alias/tf-imported"
  target_key_id = aws_kms_external_key.ext.id
}

resource "aws_kms_grant" "app" {
  name              = "app-grant"
  key_id            = aws_kms_key.sym.key_id
  grantee_principal = "arn:aws:iam::444455556666:user/app"
  operations        = ["Encrypt", "Decrypt", "GenerateDataKey"]
  constraints {
    encryption_context_equals = {
      department = "finance"
    }
  }
}

data "aws_kms_key" "by_alias" {
  key_id = aws_kms_alias.sym.name
}

data "aws_kms_alias" "sym" {
  name = aws_kms_alias.sym.name
}

data "aws_kms_public_key" "rsa" {
  key_id = aws_kms_key.rsa.key_id
}

data "aws_kms_ciphertext" "secret" {
  key_id    = aws_kms_key.sym.key_id
  plaintext = "a secret"
  context   = { purpose = "tf" }
}

output "key_arn" { value = data.aws_kms_key.by_alias.arn }
output "public_key_pem" { value = data.aws_kms_public_key.rsa.public_key_pem }
