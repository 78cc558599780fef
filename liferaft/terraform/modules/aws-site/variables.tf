variable "name" {
  description = "Stack and site name, used to name and tag every resource."
  type        = string
}

variable "host_count" {
  description = "How many hosts to create at the target site."
  type        = number
  default     = 1
}

variable "ami" {
  description = "Image of the hosts (an AMI id in the target region)."
  type        = string
}

variable "instance_type" {
  description = "Instance type of the hosts."
  type        = string
  default     = "t3.small"
}

variable "ssh_public_key" {
  description = "Public key installed for the deploy user (liferaft connects with the matching private key)."
  type        = string
}

variable "ingress_ports" {
  description = "TCP ports opened to the world: SSH and the services' ports."
  type        = list(number)
  default     = [22]
}

variable "buckets" {
  description = "Buckets to create at the target for the stack's data."
  type        = list(string)
  default     = []
}

variable "dns_zone_id" {
  description = "A Route53 zone to put records in. Empty: liferaft cuts DNS over itself, last (the default)."
  type        = string
  default     = ""
}

variable "dns_records" {
  description = "Record names (fully qualified) pointed at the hosts' public addresses when dns_zone_id is set."
  type        = list(string)
  default     = []
}

variable "dns_ttl" {
  description = "TTL of the records."
  type        = number
  default     = 60
}
