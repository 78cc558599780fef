variable "name" {
  description = "Stack and site name, used to name and tag every resource."
  type        = string
}

variable "host_count" {
  description = "How many droplets to create."
  type        = number
  default     = 1
}

variable "region" {
  description = "DigitalOcean region slug, e.g. fra1."
  type        = string
  default     = "fra1"
}

variable "image" {
  description = "Droplet image slug."
  type        = string
  default     = "debian-12-x64"
}

variable "size" {
  description = "Droplet size slug."
  type        = string
  default     = "s-1vcpu-2gb"
}

variable "ssh_public_key" {
  description = "Public key installed for root (liferaft connects with the matching private key)."
  type        = string
}

variable "ingress_ports" {
  description = "TCP ports opened to the world: SSH and the services' ports."
  type        = list(number)
  default     = [22]
}

variable "buckets" {
  description = "Spaces buckets to create for the stack's data."
  type        = list(string)
  default     = []
}
