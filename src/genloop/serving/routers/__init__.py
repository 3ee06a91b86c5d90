"""One router per resource: models, text, images, generations (with feedback), system."""
