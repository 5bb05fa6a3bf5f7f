"""The package version (a module of its own, so that any layer can read it without importing the
package facade, wmfast/__init__, which loads the models and the World)."""
__version__ = "0.1.0"
