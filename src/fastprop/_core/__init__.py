"""Compiled, private core of fastprop. Nothing here validates its inputs: the public Python
layer (fastprop.layers, fastprop.model) checks every argument before calling in."""
