"""attri_ssc.reports"""
