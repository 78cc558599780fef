# A liferaft target site on AWS: hosts, their firewall and key, the stack's buckets and (optionally) DNS records.
# The caller configures the aws provider (region, credentials by environment, endpoints).

locals {
  tags = {
    "liferaft:stack" = var.name
    "managed-by"     = "liferaft"
  }
}

resource "aws_key_pair" "deploy" {
  key_name   = "${var.name}-deploy"
  public_key = var.ssh_public_key
  tags       = local.tags
}

resource "aws_security_group" "hosts" {
  name        = "${var.name}-hosts"
  description = "liferaft target hosts of ${var.name}"
  tags        = local.tags

  dynamic "ingress" {
    for_each = toset(var.ingress_ports)
    content {
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = ["0.0.0.0/0"]
    }
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "host" {
  count                  = var.host_count
  ami                    = var.ami
  instance_type          = var.instance_type
  key_name               = aws_key_pair.deploy.key_name
  vpc_security_group_ids = [aws_security_group.hosts.id]
  tags                   = merge(local.tags, { Name = "${var.name}-${count.index}" })
}

resource "aws_s3_bucket" "data" {
  for_each = toset(var.buckets)
  bucket   = each.value
  tags     = local.tags
}

resource "aws_route53_record" "service" {
  for_each = var.dns_zone_id == "" ? toset([]) : toset(var.dns_records)
  zone_id  = var.dns_zone_id
  name     = each.value
  type     = "A"
  ttl      = var.dns_ttl
  records  = [for h in aws_instance.host : coalesce(h.public_ip, h.private_ip)]
}
