"""The example data set: independently meshed resolutions of one advection-diffusion problem."""
