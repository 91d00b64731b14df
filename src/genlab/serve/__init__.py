"""`genlab serve`: the interactive page over a trained run. app.py builds the FastAPI app
(create_app), space.py computes what the page explores (GANSpace directions, the VAE's latent map,
PNG/GIF encoding), guard.py keeps it safe (Host/Origin/token checks, body limit, the bounded model
queue); static/ is the one page (no build step, no CDN)."""
