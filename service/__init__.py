"""The running product: inference engines, the dynamic batcher and the FastAPI app."""
