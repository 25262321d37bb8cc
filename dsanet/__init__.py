"""DSANet: deep supervised attention network for single-image motion deblurring."""
