"""attri_ssc.baselines"""
