"""attri_ssc.data"""
