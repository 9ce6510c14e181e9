"""attri_ssc.evaluation"""
