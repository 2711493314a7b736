"""tfds dataset builders of the project (importing one registers its name with tfds)."""
