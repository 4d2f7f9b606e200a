"""Record marketing consent with proof, push it to Klaviyo, and prove it took effect."""

__version__ = "0.1.0"
