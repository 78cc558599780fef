output "hosts" {
  description = "The droplets created: id, name and addresses."
  value = [for h in digitalocean_droplet.host : {
    id         = h.id
    name       = h.name
    public_ip  = h.ipv4_address
    private_ip = h.ipv4_address_private
  }]
}

output "buckets" {
  value = [for b in digitalocean_spaces_bucket.data : b.name]
}
