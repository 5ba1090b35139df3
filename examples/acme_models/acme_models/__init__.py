"""Acme's own PyTorch models. The data-deletion platform builds them through the entry points this
package declares (group ``deletion_platform.models``), never by importing a name a client sent."""
