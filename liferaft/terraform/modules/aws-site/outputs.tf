output "hosts" {
  description = "The hosts created: id, name and addresses."
  value = [for h in aws_instance.host : {
    id         = h.id
    name       = h.tags["Name"]
    public_ip  = h.public_ip
    private_ip = h.private_ip
  }]
}

output "buckets" {
  description = "The buckets created."
  value       = [for b in aws_s3_bucket.data : b.bucket]
}

output "security_group_id" {
  value = aws_security_group.hosts.id
}
