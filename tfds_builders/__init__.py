"""TFDS dataset builders of the project, one folder per dataset in the `tfds new` shape."""
