"""Lab clouds: local servers that speak a vendor's documented compute API and create a real lab host (network
namespace, sshd, the injected key and cloud-init host key) for each server created through it."""
