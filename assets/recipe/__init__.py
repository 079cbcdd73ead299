"""The demo family's training recipe (see train.py). Import as `assets.recipe` with the repo root on sys.path,
or through `engine.demo.recipe()`."""
