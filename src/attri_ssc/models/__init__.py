"""attri_ssc.models"""
