# A liferaft target site on DigitalOcean: droplets, a firewall, an SSH key and Spaces buckets.
# Not applied in liferaft's tests (no DigitalOcean here): checked with `terraform fmt -check`. Users apply it with
# DIGITALOCEAN_TOKEN, SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY in the environment.

resource "digitalocean_ssh_key" "deploy" {
  name       = "${var.name}-deploy"
  public_key = var.ssh_public_key
}

resource "digitalocean_droplet" "host" {
  count    = var.host_count
  name     = "${var.name}-${count.index}"
  region   = var.region
  image    = var.image
  size     = var.size
  ssh_keys = [digitalocean_ssh_key.deploy.fingerprint]
  tags     = ["liferaft", var.name]
}

resource "digitalocean_firewall" "hosts" {
  name        = "${var.name}-hosts"
  droplet_ids = digitalocean_droplet.host[*].id

  dynamic "inbound_rule" {
    for_each = toset(var.ingress_ports)
    content {
      protocol         = "tcp"
      port_range       = tostring(inbound_rule.value)
      source_addresses = ["0.0.0.0/0", "::/0"]
    }
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

resource "digitalocean_spaces_bucket" "data" {
  for_each = toset(var.buckets)
  name     = each.value
  region   = var.region
}
