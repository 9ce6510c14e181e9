"""attri_ssc.training"""
