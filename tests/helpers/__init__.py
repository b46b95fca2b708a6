"""Shared test helpers: adapters, servers, flooders and the network-namespace lab."""
