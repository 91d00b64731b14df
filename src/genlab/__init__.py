"""genlab: train, sample and evaluate image-generation models (GAN, DCGAN, cGAN, RNN-GAN, VAE)."""
