"""Learned image models: data, pretrained/trained eps networks, training and solver studies."""
